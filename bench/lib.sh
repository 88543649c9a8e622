# Shared by the bench scripts that start their own processes: which binary
# and Python to use, a temporary directory removed on exit (with every
# background process), free ports, waiting, and etcd. Source it after
# `cd` to the repository; it defines BIN, PYTHON, DIR and, after
# start_etcd, ETCD (client URL) and META (the metadata URL, root /bench).

TARGET=${CARGO_TARGET_DIR:-target}
if [[ -z "${MAGNETAR_BIN:-}" ]]; then
  if [[ -x $TARGET/release/magnetar ]]; then MAGNETAR_BIN=$TARGET/release/magnetar
  else MAGNETAR_BIN=$TARGET/debug/magnetar; fi
fi
BIN=$MAGNETAR_BIN
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x ~/.cache/magnetar-pyenv/bin/python ]]; then PYTHON=~/.cache/magnetar-pyenv/bin/python
  else PYTHON=python3; fi
fi
export MAGNETAR_LOG=${MAGNETAR_LOG:-warn}

[[ -x $BIN ]] || { echo "no magnetar binary at $BIN (set MAGNETAR_BIN)" >&2; exit 1; }
command -v etcd >/dev/null || { echo "etcd is not installed (Debian: etcd-server)" >&2; exit 1; }

# bench_dir NAME: the temporary directory, removed on exit with every
# background job killed (KEEP=1 keeps it, with the processes' logs).
bench_dir() {
  DIR=$(mktemp -d "/tmp/magnetar-$1.XXXXXX")
  trap bench_cleanup EXIT
}
bench_cleanup() {
  local pids
  pids=$(jobs -p)
  # Paused processes would not die on SIGTERM: continue them, then kill.
  [[ -n $pids ]] && kill -CONT $pids 2>/dev/null || true
  [[ -n $pids ]] && kill -9 $pids 2>/dev/null || true
  wait 2>/dev/null || true
  if [[ -n ${KEEP:-} ]]; then echo "logs kept in $DIR"; else rm -rf "$DIR"; fi
}

free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_for() { # description command...
  local what=$1; shift
  for _ in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  echo "timed out waiting for $what" >&2; tail -n 30 "$DIR"/*.log >&2; exit 1
}

# Registered keys under /bench/PREFIX (e.g. brokers/available/) in etcd.
count_keys() {
  ETCDCTL_API=3 etcdctl --endpoints="$ETCD" get --prefix "/bench/$1" --keys-only | grep -c . || true
}

start_etcd() {
  local port peer
  port=$(free_port); peer=$(free_port)
  ETCD=http://127.0.0.1:$port
  etcd --name bench --data-dir "$DIR/etcd" \
    --listen-client-urls "$ETCD" --advertise-client-urls "$ETCD" \
    --listen-peer-urls "http://127.0.0.1:$peer" \
    --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --initial-cluster "bench=http://127.0.0.1:$peer" >"$DIR/etcd.log" 2>&1 &
  wait_for etcd curl -sf "$ETCD/health"
  META=etcd://127.0.0.1:$port/bench
}

# test_keys PREFIX N: whether at least N keys are registered under PREFIX.
test_keys() { (( $(count_keys "$1") >= $2 )); }

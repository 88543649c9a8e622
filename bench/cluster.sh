#!/usr/bin/env bash
# A real cluster on this host, in either architecture: etcd, 3 brokers
# (lease TTL 3 s) and, when decoupled, 3 bookies; namespaces at E=3 / Qw=2 /
# Qa=2 (QUORUM; monolithic: replication factor E, min.insync Qa), all on
# free 127.0.0.1 ports in a temporary directory (removed on exit). Then:
#  1. throughput and latency: `perf produce` (pulsar crate, 4 producers) on a
#     16-partition topic whose partitions are spread over the 3 brokers, with
#     a tailing `perf consume` (3 Shared consumers);
#  1b. wire: one partition, `perf produce --wire` (pre-built batches, no
#     client library) straight to its owner: the storage path's own figure;
#  2. bundle move: fill one non-partitioned topic with BACKLOG_MB of 1 KiB
#     messages (a durable subscription keeps it), unload its bundle through
#     the admin REST API, and time until a consumer of that subscription
#     reads again (and a producer sends) through the new owner;
#  3. failover: kill -9 the broker owning partition 0 of a 16-partition
#     topic while a paced producer (official Python client) sends; time
#     from the kill to the first receipt stored by a new owner.
#
#   bench/cluster.sh                      # all phases, 1 GiB backlog
#   PHASES=unload BACKLOG_MB=64 bench/cluster.sh
#   ARCHITECTURE=monolithic QUORUM=3/3/2 PHASES=perf bench/cluster.sh
#
# Environment: MAGNETAR_BIN (release or debug binary; default
# $CARGO_TARGET_DIR/release/magnetar, else .../debug/magnetar), PYTHON (with
# pulsar-client; default ~/.cache/magnetar-pyenv/bin/python, else python3),
# PHASES (comma list of perf,wire,unload,failover; default perf,unload,failover), DURATION (perf window, 20s),
# RATE (perf produce msg/s, 0 = unlimited), BACKLOG_MB (1024),
# FAILOVER_RATE (msg/s during the failover probe, 1000), LEASE_TTL (3s),
# BROKER_ARGS (extra broker flags, e.g. "--load-shedding false"),
# ARCHITECTURE (decoupled or monolithic, default decoupled), QUORUM (E/Qw/Qa,
# default 3/2/2; monolithic ignores Qw),
# KEEP=1 keeps the directory with the logs.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
PHASES=${PHASES:-perf,unload,failover}
DURATION=${DURATION:-20s}
RATE=${RATE:-0}
BACKLOG_MB=${BACKLOG_MB:-1024}
FAILOVER_RATE=${FAILOVER_RATE:-1000}
LEASE_TTL=${LEASE_TTL:-3s}
ARCHITECTURE=${ARCHITECTURE:-decoupled}
QUORUM=${QUORUM:-3/2/2}
IFS=/ read -r ENSEMBLE WRITE_QUORUM ACK_QUORUM <<<"$QUORUM"
case $ARCHITECTURE in
  decoupled) BOOKIES=(0 1 2) ;;
  monolithic) BOOKIES=() ;;
  *) echo "ARCHITECTURE is decoupled or monolithic, not $ARCHITECTURE" >&2; exit 1 ;;
esac
"$PYTHON" -c 'import pulsar, crc32c' 2>/dev/null || {
  echo "$PYTHON cannot import pulsar, crc32c: pip install -r tests/python/requirements.txt" >&2; exit 1; }

bench_dir cluster-bench
echo "binary: $BIN  dir: $DIR  architecture: $ARCHITECTURE  E/Qw/Qa: $QUORUM"

# --- etcd -------------------------------------------------------------------
start_etcd
etcd_keys() { ETCDCTL_API=3 etcdctl --endpoints=$ETCD get --prefix "/bench/$1" --keys-only | grep -v '^$' || true; }

# --- bookies and brokers ----------------------------------------------------
for i in "${BOOKIES[@]}"; do
  gp=$(free_port); hp=$(free_port)
  "$BIN" bookie --metadata "$META" --data-dir "$DIR/bookie$i" --listen 127.0.0.1:$gp \
    --http 127.0.0.1:$hp --advertise 127.0.0.1:$gp >"$DIR/bookie$i.log" 2>&1 &
  BOOKIE_HTTP[$i]=http://127.0.0.1:$hp
done
for i in 0 1 2; do
  bp=$(free_port); hp=$(free_port)
  storage=()
  if [[ $ARCHITECTURE == monolithic ]]; then
    storage=(--architecture monolithic --data-dir "$DIR/broker$i-data"
      --replication-listen 127.0.0.1:$(free_port))
  fi
  "$BIN" broker --metadata "$META" --listen 127.0.0.1:$bp --http 127.0.0.1:$hp \
    --lease-ttl "$LEASE_TTL" --ensemble-size "$ENSEMBLE" --write-quorum "$WRITE_QUORUM" \
    --ack-quorum "$ACK_QUORUM" "${storage[@]}" ${BROKER_ARGS:-} \
    >"$DIR/broker$i.log" 2>&1 &
  BROKER_PID[$i]=$!
  BROKER_ID[$i]=127.0.0.1:$bp
  BROKER_HTTP[$i]=http://127.0.0.1:$hp
done
for i in "${BOOKIES[@]}"; do
  wait_for "bookie$i" curl -sf "${BOOKIE_HTTP[$i]}/health"
done
for i in 0 1 2; do
  wait_for "broker$i" curl -sf "${BROKER_HTTP[$i]}/health"
done
[[ $ARCHITECTURE == monolithic ]] || wait_for "3 bookie registrations" test_keys bookies/available/ 3
wait_for "3 broker registrations" test_keys brokers/available/ 3
URL=pulsar://${BROKER_ID[0]},${BROKER_ID[1]},${BROKER_ID[2]}
# The pulsar crate (perf) takes one address and follows lookups from there.
CRATE_URL=pulsar://${BROKER_ID[0]}
ADMIN=${BROKER_HTTP[0]}
echo "brokers: ${BROKER_ID[*]}  etcd: $ETCD"

admin() { # method path [json body]
  local out code
  out=$(curl -s -o "$DIR/admin.out" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} "$ADMIN$2")
  code=$out
  if [[ $code != 2* && $code != 409 ]]; then
    echo "admin $1 $2 -> $code: $(cat "$DIR/admin.out")" >&2; exit 1
  fi
}
admin PUT /admin/v2/tenants/bench '{"adminRoles":[],"allowedClusters":["standalone"]}'
for ns in ns backlog; do
  admin PUT /admin/v2/namespaces/bench/$ns
  admin POST /admin/v2/namespaces/bench/$ns/persistence \
    '{"bookkeeperEnsemble":'"$ENSEMBLE"',"bookkeeperWriteQuorum":'"$WRITE_QUORUM"',"bookkeeperAckQuorum":'"$ACK_QUORUM"',"managedLedgerMaxMarkDeleteRate":0}'
done

owners_of() { # topic partitions -> "partition owner" lines (claims bundles like a client lookup)
  local p
  for ((p = 0; p < $2; p++)); do
    echo "$p $(curl -sf "$ADMIN/lookup/v2/topic/persistent/bench/ns/$1-partition-$p" |
      "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["brokerUrl"])')"
  done
}

has() { [[ ",$PHASES," == *",$1,"* ]]; }

# --- 1. throughput and latency ------------------------------------------------
if has perf; then
  echo "== 1. perf: 16-partition topic, 1 KiB messages, $DURATION, rate ${RATE} (0 = unlimited)"
  admin PUT /admin/v2/persistent/bench/ns/perf16/partitions 16
  echo "-- partition owners:"; owners_of perf16 16 | awk '{print $2}' | sort | uniq -c
  "$BIN" perf consume --url "$CRATE_URL" --topic persistent://bench/ns/perf16 --subscription tail \
    --subscription-type shared --consumers 3 --initial-position earliest \
    --duration "$DURATION" --warmup 5s >"$DIR/consume.txt" 2>&1 &
  consumer=$!
  sleep 2
  "$BIN" perf produce --url "$CRATE_URL" --topic persistent://bench/ns/perf16 --producers 4 \
    --rate "$RATE" --duration "$DURATION" --warmup 3s >"$DIR/produce.txt" 2>&1 || {
      echo "perf produce failed:"; tail -20 "$DIR/produce.txt"; }
  wait $consumer || { echo "perf consume failed:"; tail -20 "$DIR/consume.txt"; }
  echo "-- produce:"; tail -4 "$DIR/produce.txt"
  echo "-- consume:"; tail -4 "$DIR/consume.txt"
fi

# --- 1b. one partition, pre-built batches (no client library) ------------------
if has wire; then
  echo "== 1b. wire: one partition, 1 KiB messages, $DURATION, pre-built batches straight to its owner, rate ${RATE}"
  OWNER=$(curl -sf "$ADMIN/lookup/v2/topic/persistent/bench/ns/wire1" |
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["brokerUrl"])')
  "$BIN" perf produce --wire --url "$OWNER" --topic persistent://bench/ns/wire1 --producers 1 \
    --rate "$RATE" --duration "$DURATION" --warmup 3s >"$DIR/wire.txt" 2>&1 || {
      echo "perf produce --wire failed:"; tail -20 "$DIR/wire.txt"; }
  echo "-- produce --wire:"; tail -3 "$DIR/wire.txt"
fi

# --- 2. moving a bundle with a large backlog -----------------------------------
if has unload; then
  TOPIC=persistent://bench/backlog/big
  echo "== 2. unload of the bundle holding $TOPIC with ${BACKLOG_MB} MiB of backlog"
  "$PYTHON" bench/cluster_probe.py subscribe --url "$URL" --topic $TOPIC --sub backlog
  OWNER_HTTP=$(curl -sf "$ADMIN/lookup/v2/topic/persistent/bench/backlog/big" |
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["httpUrl"])')
  OWNER=$(curl -sf "$ADMIN/lookup/v2/topic/persistent/bench/backlog/big" |
    "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["brokerUrl"])')
  echo "owner: $OWNER; ownership keys: $(etcd_keys ownership/bench/backlog/ | tr '\n' ' ')"
  backlog_bytes() {
    curl -sf "$OWNER_HTTP/admin/v2/persistent/bench/backlog/big/stats" |
      "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin).get("backlogSize", 0))'
  }
  target=$((BACKLOG_MB * 1024 * 1024))
  fill_start=$SECONDS
  while :; do
    have=$(backlog_bytes)
    (( have >= target )) && break
    # --wire connects straight to the owner (it does no lookup).
    "$BIN" perf produce --wire --url "$OWNER" --topic $TOPIC --producers 2 \
      --batch-max-messages 100 --duration 5s --warmup 0s >"$DIR/fill.txt" 2>&1 || {
        echo "fill failed:"; tail -5 "$DIR/fill.txt"; exit 1; }
  done
  echo "filled $(( $(backlog_bytes) / 1048576 )) MiB in $((SECONDS - fill_start)) s"
  BUNDLE=$(etcd_keys ownership/bench/backlog/ | head -1 | sed 's#.*/##')
  echo "bundle (etcd): $BUNDLE"
  set +e
  "$PYTHON" bench/cluster_probe.py unload --url "$URL" --topic $TOPIC --sub backlog \
    --bundle "$BUNDLE" --http "${BROKER_HTTP[0]}" --http "${BROKER_HTTP[1]}" --http "${BROKER_HTTP[2]}"
  rc=$?
  set -e
  if (( rc == 3 )); then
    echo "!! the unload endpoint answered 404: the bundle-move figure needs a broker with" \
         "PUT /admin/v2/namespaces/{tenant}/{ns}/{bundle}/unload"
  elif (( rc != 0 )); then
    echo "!! unload probe failed ($rc)"
  fi
  echo "ownership after: $(ETCDCTL_API=3 etcdctl --endpoints=$ETCD get --prefix /bench/ownership/bench/backlog/ | tr '\n' ' ')"
fi

# --- 3. failover of a killed owner --------------------------------------------
if has failover; then
  echo "== 3. failover: kill -9 of the owner of partition 0 of a 16-partition topic (lease TTL $LEASE_TTL)"
  admin PUT /admin/v2/persistent/bench/ns/fail16/partitions 16
  "$PYTHON" bench/cluster_probe.py failover --url "$URL" --topic persistent://bench/ns/fail16 \
    --rate "$FAILOVER_RATE" \
    --http "${BROKER_HTTP[0]}" --http "${BROKER_HTTP[1]}" --http "${BROKER_HTTP[2]}" \
    --broker "${BROKER_ID[0]}=${BROKER_PID[0]}" --broker "${BROKER_ID[1]}=${BROKER_PID[1]}" \
    --broker "${BROKER_ID[2]}=${BROKER_PID[2]}" || echo "!! failover probe failed"
fi

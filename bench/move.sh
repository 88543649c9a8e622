#!/usr/bin/env bash
# Moving a topic holding 0.1, 1 and 4 GB to another broker, in either
# architecture, with the same admin call (Pulsar's bundle unload with
# destinationBroker): etcd, 4 brokers and, when decoupled, 3 bookies, on
# free 127.0.0.1 ports in a temporary directory (removed on exit).
# Namespaces are E=3 / Qw=3 / Qa=2 (monolithic: replication factor 3,
# min.insync 2), one bundle, so the topic's bundle holds only it.
#
# For each size (cumulative: the topic grows between moves) it fills the
# topic with 1 KiB messages kept by a durable subscription, moves the
# bundle to a broker that holds no copy of it (monolithic: the one left
# out of its replicas; decoupled: any other broker), and reports
#   - the admin call's duration (monolithic: copy + hand-over),
#   - the time until a consumer of the subscription reads again,
#   - the bytes copied: the brokers' replication_fetched_bytes_total
#     (monolithic) or the bookies' bytes_added_total (decoupled) during
#     the move, against the topic's stored size.
#
#   bench/move.sh                                   # decoupled, 0.1 1 4 GB
#   ARCHITECTURE=monolithic bench/move.sh
#   ARCHITECTURE=monolithic SIZES_GB="0.1 1" THROTTLE=50M bench/move.sh
#
# Environment: MAGNETAR_BIN (default $CARGO_TARGET_DIR/release/magnetar,
# else .../debug/magnetar), PYTHON (with pulsar-client), ARCHITECTURE
# (decoupled | monolithic), SIZES_GB (ascending, default "0.1 1 4"),
# THROTTLE (monolithic copy throttle in bytes/s, K/M/G suffixes; default
# none), FLUSH_POLICY (monolithic: fsync | os, default fsync), KEEP=1
# keeps the directory with the logs. Prints one RESULT json line per size.
set -euo pipefail
cd "$(dirname "$0")/.."

source bench/lib.sh
ARCHITECTURE=${ARCHITECTURE:-decoupled}
SIZES_GB=${SIZES_GB:-0.1 1 4}
FLUSH_POLICY=${FLUSH_POLICY:-fsync}
case $ARCHITECTURE in
  decoupled) BOOKIES=(0 1 2) ;;
  monolithic) BOOKIES=() ;;
  *) echo "ARCHITECTURE is decoupled or monolithic, not $ARCHITECTURE" >&2; exit 1 ;;
esac
THROTTLE_BYTES=
if [[ -n ${THROTTLE:-} ]]; then
  THROTTLE_BYTES=$("$PYTHON" -c '
import sys; t = sys.argv[1].strip(); units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
print(int(float(t[:-1]) * units[t[-1].upper()]) if t[-1].upper() in units else int(t))' "$THROTTLE")
fi
"$PYTHON" -c 'import pulsar' 2>/dev/null || {
  echo "$PYTHON cannot import pulsar: pip install -r tests/python/requirements.txt" >&2; exit 1; }

bench_dir move-bench
echo "binary: $BIN  dir: $DIR  architecture: $ARCHITECTURE  sizes: $SIZES_GB GB" \
  "throttle: ${THROTTLE:-none}$([[ $ARCHITECTURE == monolithic ]] && echo "  flush policy: $FLUSH_POLICY")"

json() { "$PYTHON" -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

start_etcd

for i in "${BOOKIES[@]}"; do
  gp=$(free_port); hp=$(free_port)
  "$BIN" bookie --metadata "$META" --data-dir "$DIR/bookie$i" --listen 127.0.0.1:$gp \
    --http 127.0.0.1:$hp --advertise 127.0.0.1:$gp >"$DIR/bookie$i.log" 2>&1 &
  BOOKIE_HTTP[$i]=http://127.0.0.1:$hp
done
for i in 0 1 2 3; do
  bp=$(free_port); hp=$(free_port)
  storage=()
  if [[ $ARCHITECTURE == monolithic ]]; then
    storage=(--architecture monolithic --data-dir "$DIR/broker$i-data"
      --replication-listen 127.0.0.1:$(free_port) --flush-policy "$FLUSH_POLICY")
  fi
  "$BIN" broker --metadata "$META" --listen 127.0.0.1:$bp --http 127.0.0.1:$hp \
    --lease-ttl 10s --load-shedding false --ensemble-size 3 --write-quorum 3 --ack-quorum 2 \
    "${storage[@]}" >"$DIR/broker$i.log" 2>&1 &
  BROKER_ID[$i]=127.0.0.1:$bp
  BROKER_HTTP[$i]=http://127.0.0.1:$hp
done
for i in "${BOOKIES[@]}"; do wait_for "bookie$i" curl -sf "${BOOKIE_HTTP[$i]}/health"; done
for i in 0 1 2 3; do wait_for "broker$i" curl -sf "${BROKER_HTTP[$i]}/health"; done
wait_for "4 broker registrations" test_keys brokers/available/ 4
[[ $ARCHITECTURE == monolithic ]] || wait_for "3 bookie registrations" test_keys bookies/available/ 3
ADMIN=${BROKER_HTTP[0]}
URL=pulsar://${BROKER_ID[0]},${BROKER_ID[1]},${BROKER_ID[2]},${BROKER_ID[3]}

admin() { # method path [json body] -> body on stdout
  local code
  code=$(curl -s -o "$DIR/admin.out" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' \
    ${3:+-d "$3"} "$ADMIN$2")
  if [[ $code != 2* && $code != 409 ]]; then
    echo "admin $1 $2 -> $code: $(cat "$DIR/admin.out")" >&2; exit 1
  fi
  cat "$DIR/admin.out"
}
admin PUT /admin/v2/tenants/bench '{"adminRoles":[],"allowedClusters":["standalone"]}' >/dev/null
admin PUT /admin/v2/namespaces/bench/move '{"bundles":{"numBundles":1}}' >/dev/null
admin POST /admin/v2/namespaces/bench/move/persistence \
  '{"bookkeeperEnsemble":3,"bookkeeperWriteQuorum":3,"bookkeeperAckQuorum":2,"managedLedgerMaxMarkDeleteRate":0}' >/dev/null
BUNDLE=0x00000000_0xffffffff
TOPIC=persistent://bench/move/big
TOPIC_PATH=bench/move/big

owner() { curl -sf "$ADMIN/lookup/v2/topic/persistent/$TOPIC_PATH" | json 'd["brokerUrl"][len("pulsar://"):]'; }
http_of() { local i; for i in 0 1 2 3; do [[ ${BROKER_ID[$i]} == "$1" ]] && echo "${BROKER_HTTP[$i]}"; done; }
sum_metric() { # metric url...
  local name=$1 total=0 v; shift
  for u in "$@"; do
    v=$(curl -sf "$u/metrics" | awk -v m="$name" '$1 == m {print $2}')
    total=$("$PYTHON" -c "print(int(float('${v:-0}')) + $total)")
  done
  echo "$total"
}
copied_bytes() {
  if [[ $ARCHITECTURE == monolithic ]]; then
    sum_metric magnetar_broker_replication_fetched_bytes_total "${BROKER_HTTP[@]}"
  else
    sum_metric magnetar_bookie_bytes_added_total "${BOOKIE_HTTP[@]}"
  fi
}
stored_bytes() { # the owner's view of the topic's stored size
  curl -sf "$(http_of "$(owner)")/admin/v2/persistent/$TOPIC_PATH/internalStats" | json 'd["totalSize"]'
}
# A broker to move to: monolithic, the one holding no copy; else any other.
destination() {
  local current=$1
  if [[ $ARCHITECTURE == monolithic ]]; then
    local replicas
    replicas=$(curl -sf "$(http_of "$current")/admin/v2/persistent/$TOPIC_PATH/replicas" |
      json '" ".join(r["brokerId"] or "" for r in d["replicas"])')
    for b in "${BROKER_ID[@]}"; do [[ " $replicas " == *" $b "* ]] || { echo "$b"; return; }; done
  else
    for b in "${BROKER_ID[@]}"; do [[ $b == "$current" ]] || { echo "$b"; return; }; done
  fi
}

# A durable subscription keeps the backlog (retention would trim it).
"$PYTHON" - "$URL" "$TOPIC" <<'PY'
import sys, pulsar
c = pulsar.Client(sys.argv[1], logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
c.subscribe(sys.argv[2], "backlog").close(); c.close()
PY
echo "owner: $(owner)"

for size in $SIZES_GB; do
  target=$("$PYTHON" -c "print(int($size * (1 << 30)))")
  fill_start=$SECONDS
  while :; do
    left=$((target - $(stored_bytes)))
    (( left > 0 )) || break
    # Short rounds near the target, so a size is not overshot by much.
    round=5s; (( left < 512 << 20 )) && round=1s
    # --wire connects straight to the owner (it does no lookup).
    "$BIN" perf produce --wire --url "pulsar://$(owner)" --topic $TOPIC --producers 2 \
      --batch-max-messages 100 --duration $round --warmup 0s >"$DIR/fill.txt" 2>&1 || {
        echo "fill failed:"; tail -5 "$DIR/fill.txt"; exit 1; }
  done
  from=$(owner); to=$(destination "$from")
  have=$(stored_bytes)
  echo "== $size GB: filled to $((have >> 20)) MiB in $((SECONDS - fill_start)) s; moving $from -> $to"
  before=$(copied_bytes)
  query="destinationBroker=$to${THROTTLE_BYTES:+&throttleBytesPerSecond=$THROTTLE_BYTES}"
  t0=$("$PYTHON" -c 'import time; print(time.monotonic())')
  admin PUT "/admin/v2/namespaces/bench/move/$BUNDLE/unload?$query" >/dev/null
  t1=$("$PYTHON" -c 'import time; print(time.monotonic())')
  # Until a consumer of the subscription reads through the new owner.
  t2=$("$PYTHON" - "$URL" "$TOPIC" <<'PY'
import sys, time, pulsar
c = pulsar.Client(sys.argv[1], operation_timeout_seconds=60,
                  logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
consumer = c.subscribe(sys.argv[2], "backlog")
consumer.receive(timeout_millis=60_000)
print(time.monotonic())
consumer.close(); c.close()
PY
)
  after=$(copied_bytes)
  now_owner=$(owner)
  "$PYTHON" - <<PY
import json
r = {"architecture": "$ARCHITECTURE", "size_gb": $size, "stored_bytes": $have,
     "from": "$from", "to": "$to", "owner_after": "$now_owner",
     "move_call_s": round($t1 - $t0, 2), "until_read_s": round($t2 - $t0, 2),
     "bytes_copied": $after - $before, "throttle_bytes_per_s": "${THROTTLE_BYTES:-none}",
     "flush_policy": "$([[ $ARCHITECTURE == monolithic ]] && echo "$FLUSH_POLICY" || echo "bookie journal fsync")"}
print(f"   move call {r['move_call_s']} s, reading again after {r['until_read_s']} s, "
      f"{r['bytes_copied'] >> 20} MiB copied of {r['stored_bytes'] >> 20} MiB stored; owner now {r['owner_after']}")
print("RESULT " + json.dumps(r))
PY
done

#!/usr/bin/env bash
# Issue 5 workload: a 4-partition topic, 1 KiB messages.
#  1. one Shared subscription (3 consumers) tailing a paced producer;
#  2. the same with a Key_Shared subscription (3 consumers) beside it;
#  3. catch-up: a 1 GiB backlog read by a subscription while producers keep
#     writing, with publish latency measured alone and during the catch-up.
# Runs its own `magnetar standalone` on free ports in a temporary directory.
#
#   bench/subscriptions.sh [RATE msg/s, default 60000]
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${1:-60000}
BIN=${MAGNETAR_BIN:-${CARGO_TARGET_DIR:-target}/debug/magnetar}
DIR=$(mktemp -d /tmp/magnetar-bench5.XXXXXX)
PORT=26650 HTTP=28080
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
export MAGNETAR_LOG=${MAGNETAR_LOG:-error}

"$BIN" standalone --data-dir "$DIR/data" --listen 127.0.0.1:$PORT --http 127.0.0.1:$HTTP \
  --bookie-listen 127.0.0.1:23181 --bookie-http 127.0.0.1:28000 >"$DIR/standalone.log" 2>&1 &
for _ in $(seq 100); do curl -sf http://127.0.0.1:$HTTP/health >/dev/null && break; sleep 0.2; done
URL=pulsar://127.0.0.1:$PORT
ADMIN=http://127.0.0.1:$HTTP/admin/v2/persistent/public/default

partitioned() {
  curl -sf -X PUT -H 'Content-Type: application/json' -d 4 "$ADMIN/$1/partitions" >/dev/null
}
consume() { # topic subscription type duration [warmup]
  "$BIN" perf consume --url $URL --topic "$1" --subscription "$2" --subscription-type "$3" \
    --consumers 3 --initial-position earliest --duration "$4" --warmup "${5:-5s}"
}
produce() { # topic rate duration
  "$BIN" perf produce --wire --url $URL --topic "$1" --partitions 4 --producers 4 --keys 1000 \
    --rate "$2" --batch-max-messages 100 --duration "$3" --warmup 5s
}

echo "== 1. one Shared subscription, producer at $RATE msg/s"
partitioned single
consume single shared shared 20s > "$DIR/single.txt" &
c1=$!
sleep 2
produce single "$RATE" 22s
wait $c1
cat "$DIR/single.txt"

echo "== 2. Shared + Key_Shared subscriptions, producer at $RATE msg/s"
partitioned double
consume double shared shared 20s > "$DIR/shared.txt" &
c1=$!
consume double keyed key-shared 20s > "$DIR/keyed.txt" &
c2=$!
sleep 2
produce double "$RATE" 22s
wait $c1 $c2
echo "-- Shared:"; cat "$DIR/shared.txt"
echo "-- Key_Shared:"; cat "$DIR/keyed.txt"

echo "== 3. catch-up of a 1 GiB backlog while producing at $((RATE / 2)) msg/s"
partitioned catchup
# The subscription exists (so nothing is trimmed) but reads nothing yet.
consume catchup reader shared 1s 0s >/dev/null
"$BIN" perf produce --wire --url $URL --topic catchup --partitions 4 --producers 4 \
  --batch-max-messages 100 --duration 10s --warmup 0s | tail -2
echo "-- publish latency with no reader:"
produce catchup $((RATE / 2)) 20s | tail -3
echo "-- publish latency during the catch-up, and the catch-up read rate:"
consume catchup reader shared 25s 2s > "$DIR/catchup.txt" &
c1=$!
sleep 3
produce catchup $((RATE / 2)) 20s | tail -3
wait $c1
cat "$DIR/catchup.txt"

#!/usr/bin/env bash
# The same produce workload on `magnetar standalone` in each storage
# architecture, one after another on this machine: decoupled (one bookie,
# 1/1/1, journal fsync), monolithic with an fsync per group of appends, and
# monolithic with `--flush-policy os` (receipts before any fsync, Kafka's
# default). 1 KiB messages, pre-built batches over the protocol (--wire).
# Each server runs on free ports in its own temporary directory.
#
#   bench/architectures.sh [DURATION, default 20s] [RATE msg/s, default unlimited]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20s}
RATE=${2:-}
BIN=${MAGNETAR_BIN:-${CARGO_TARGET_DIR:-target}/debug/magnetar}
DIR=$(mktemp -d /tmp/magnetar-bench-arch.XXXXXX)
PORT=36650 HTTP=38080
trap 'kill $(jobs -p) 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT
export MAGNETAR_LOG=${MAGNETAR_LOG:-error}

run() { # name, then standalone flags
  local name=$1
  shift
  "$BIN" standalone --data-dir "$DIR/$name" --listen 127.0.0.1:$PORT --http 127.0.0.1:$HTTP \
    --bookie-listen 127.0.0.1:33181 --bookie-http 127.0.0.1:38000 "$@" >"$DIR/$name.log" 2>&1 &
  local server=$!
  for _ in $(seq 150); do curl -sf http://127.0.0.1:$HTTP/admin/v2/brokers/health >/dev/null && break; sleep 0.2; done
  echo "== $name ($*)"
  "$BIN" perf produce --wire --url pulsar://127.0.0.1:$PORT --topic "perf-$name" --size 1024 \
    --producers 2 --batch-max-messages 1000 --duration "$DURATION" --warmup 5s \
    ${RATE:+--rate "$RATE"} | tail -3
  kill "$server"
  wait "$server" || true
}

run decoupled --architecture decoupled
run monolithic-fsync --architecture monolithic --flush-policy fsync
run monolithic-os --architecture monolithic --flush-policy os

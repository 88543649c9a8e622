#!/usr/bin/env bash
# The whole side-by-side comparison in one command: every scenario of
# bench/workloads/ through `magnetar bench run`, on the decoupled and the
# monolithic topology one after another, then `magnetar bench report` over
# the result files. Durations are the ones the committed report used
# (shorter than the workload files', for one 2-core machine); each result
# file records its exact command.
#
#   bench/compare.sh OUTPUT_DIR [SCENARIO...]
#
# SCENARIO names (default: all): 5k 10k maxrate backlog1g kill-leader
# kill-storage add-broker move topics1000 topics10000, and 5k-os and
# topics1000-os (monolithic with --flush-policy os: receipts before any
# fsync, Kafka's default). Results go to
# OUTPUT_DIR/results/NAME-TOPOLOGY.json and the report to
# OUTPUT_DIR/report.md with its charts. A run that fails verification
# still writes its file (and is reported); the script goes on and exits 1
# at the end. MAGNETAR_BIN overrides the binary (default: the debug build
# under CARGO_TARGET_DIR or target/).
set -uo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ]; then
  sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
OUT=$1
shift
BIN=${MAGNETAR_BIN:-${CARGO_TARGET_DIR:-target}/debug/magnetar}
W=bench/workloads
mkdir -p "$OUT/results"

# name | workload | flags for both topologies | decoupled-only flags | monolithic-only
# flags | topologies (default: both). 10,000 topics run decoupled only: on
# this machine the monolithic set-up had 4,569 of the 10,000 subscriptions
# after 12.5 minutes, its brokers CPU-bound (bench/README.md says why).
SCENARIOS=(
  "5k|1-topic-100-partitions-1kb-4p-4c-5k.yaml|--test-duration 60s --warmup 15s||"
  "10k|1-topic-100-partitions-1kb-4p-4c-10k.yaml|--test-duration 60s --warmup 15s||"
  "maxrate|1-topic-100-partitions-1kb-4p-4c-max-rate.yaml|--test-duration 60s --warmup 20s||"
  "backlog1g|1-topic-100-partitions-1kb-4p-4c-backlog.yaml|--test-duration 120s --warmup 10s||"
  "kill-leader|magnetar-kill-broker.yaml|--lease-ttl 3s --test-duration 60s --warmup 10s||"
  "kill-storage|magnetar-kill-storage-node.yaml|--lease-ttl 3s --test-duration 60s --warmup 10s|--bookies 4|"
  "add-broker|magnetar-add-broker.yaml|--test-duration 60s --warmup 10s||"
  "move|magnetar-move-topic.yaml|--test-duration 200s --warmup 10s||--brokers 4"
  "topics1000|magnetar-many-topics-1000.yaml|--test-duration 30s --warmup 10s||"
  "5k-os|1-topic-100-partitions-1kb-4p-4c-5k.yaml|--test-duration 60s --warmup 15s||--flush-policy os|monolithic"
  "topics1000-os|magnetar-many-topics-1000.yaml|--test-duration 30s --warmup 10s||--flush-policy os|monolithic"
  "topics10000|magnetar-many-topics-10000.yaml|--test-duration 60s --warmup 10s|||decoupled"
)

wanted() { # NAME [WANTED...]: whether NAME is one of WANTED (all when none)
  local name=$1
  shift
  [ $# -eq 0 ] && return 0
  for w in "$@"; do [ "$w" = "$name" ] && return 0; done
  return 1
}

failed=0
for scenario in "${SCENARIOS[@]}"; do
  IFS='|' read -r name workload common decoupled monolithic topologies <<<"$scenario"
  wanted "$name" "$@" || continue
  for topology in ${topologies:-decoupled monolithic}; do
    extra=$decoupled
    [ "$topology" = monolithic ] && extra=$monolithic
    out="$OUT/results/$name-$topology.json"
    echo "== $name on $topology"
    # shellcheck disable=SC2086 # the flag lists are split on purpose
    if ! "$BIN" --log warn bench run "$W/$workload" --topology "$topology" $common $extra \
      --sample-interval 5s --output "$out"; then
      echo "bench/compare.sh: $name on $topology failed (see above)" >&2
      failed=1
    fi
  done
done

"$BIN" bench report "$OUT"/results/*.json --output "$OUT" || failed=1
exit $failed

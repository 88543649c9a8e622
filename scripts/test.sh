#!/usr/bin/env bash
# One command to run the whole test suite on a fresh machine: installs
# prerequisites, builds the `magnetar` binary the process tests spawn, and runs
# every test (unit, conformance against a real etcd, bookie processes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --bin magnetar
export MAGNETAR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/magnetar"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-features "$@" 2>&1 | tee "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$status"

#!/usr/bin/env bash
# One command to run the whole test suite on a fresh machine: installs
# prerequisites, builds the `magnetar` binary the process tests spawn, and runs
# every test (unit, conformance against a real etcd, bookie processes).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --bin magnetar
export MAGNETAR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/magnetar"
cargo test --workspace --all-features "$@"

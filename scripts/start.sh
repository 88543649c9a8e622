#!/usr/bin/env bash
# One command to run Magnetar on a fresh machine: installs prerequisites,
# builds, and starts `magnetar standalone` (data under ./data). Extra
# arguments go to `magnetar standalone`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --bin magnetar
exec "${CARGO_TARGET_DIR:-target}/debug/magnetar" standalone "$@"

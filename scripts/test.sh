#!/usr/bin/env bash
# One command to run the whole test suite on a fresh machine: installs
# prerequisites, builds the `magnetar` binary the process tests spawn, and runs
# every test (unit, conformance against a real etcd, bookie processes), then
# the client-compatibility suite: the official Python client (`pulsar-client`)
# against `magnetar standalone`. Both suites always run; the exit status is
# non-zero if either fails. Arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
cargo build --bin magnetar
export MAGNETAR_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/magnetar"
log=$(mktemp)
pylog=$(mktemp)
# Servers' temp dirs go here, so even an aborted pytest run leaves nothing.
pytmp=$(mktemp -d)
trap 'rm -f "$log" "$pylog"; rm -rf "$pytmp"' EXIT

status=0
cargo test --workspace --all-features --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?
# cargo prints one `test result:` line per test binary.
read -r cargo_passed cargo_failed < <(awk '
  /^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END { print p + 0, f + 0 }' "$log")
# A build failure or crash leaves no result line: count it as a failure.
if [ "$status" -ne 0 ] && [ "$cargo_failed" -eq 0 ]; then cargo_failed=1; fi

# The Python suite runs in a virtualenv kept outside the clone and reused.
pyenv_dir="${XDG_CACHE_HOME:-$HOME/.cache}/magnetar-pyenv"
# (Each step checks its own status: `set -e` does not apply inside `if`.)
python_env() {
  if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    echo "test.sh: installing python3-venv"
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq || return 1
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
      python3 python3-venv || return 1
  fi
  if ! "$pyenv_dir/bin/python" -c 'import sys' 2>/dev/null; then
    rm -rf "$pyenv_dir"
    python3 -m venv "$pyenv_dir" || return 1
  fi
  "$pyenv_dir/bin/python" -m pip install -q --disable-pip-version-check \
    -r tests/python/requirements.txt || return 1
}

py_status=0
if python_env; then
  TMPDIR="$pytmp" "$pyenv_dir/bin/python" -m pytest -q tests/python 2>&1 | tee "$pylog" \
    || py_status=$?
else
  py_status=1
  echo "test.sh: could not set up the Python environment in $pyenv_dir"
fi
# pytest's closing line, e.g. "2 failed, 14 passed, 1 error in 61.20s".
read -r py_passed py_failed < <(awk '
  / in [0-9.]+s/ && /(passed|failed|error)/ {
    p = 0; f = 0
    for (i = 1; i < NF; i++) { w = $(i+1); gsub(/[,=]/, "", w)
      if (w == "passed") p = $i; if (w == "failed" || w == "error" || w == "errors") f += $i } }
  END { print p + 0, f + 0 }' "$pylog")
# A run aborted before its summary (setup failure, timeout) counts as a failure.
if [ "$py_status" -ne 0 ] && [ "$py_failed" -eq 0 ]; then py_failed=1; fi

# One closing line for the whole run.
echo "tests: $((cargo_passed + py_passed)) passed, $((cargo_failed + py_failed)) failed"
if [ "$status" -ne 0 ]; then exit "$status"; fi
exit "$py_status"

#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), lint, then run the tests under
# coverage and report the line coverage of the plugin (npu_platform, patches, entry_points;
# the emulation package is left out: it stands in for the hardware).
# Extra arguments go to pytest, e.g. scripts/test.sh -k doctor
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .

export COVERAGE_FILE="$PWD/.coverage"
PY=.venv/bin/python
$PY -m coverage erase
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
$PY -m coverage run -m pytest "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
$PY -m coverage combine -q || true
echo
echo "Line coverage of npu_platform, patches and entry_points (outside npu_platform/emulation),"
echo "measured in every process the tests started:"
$PY -m coverage report --precision=1 || true
# Repeat pytest's closing line last, so it stays the run's closing line.
grep -E "^=+ .*(passed|failed|error).* =+$" "$log" | tail -n 1 || true
exit "$status"

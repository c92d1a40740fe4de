#!/usr/bin/env bash
# The README's test command: set up .venv and .venv-vllm033 (idempotent), lint, run the
# tests under coverage on the vLLM 0.32 line (.venv: torch 2.13, vLLM 0.32, sglang), then the
# vLLM-facing tests on the vLLM 0.33 line (.venv-vllm033: torch 2.14, vLLM 0.33), and report
# the line coverage of the plugin (npu_platform, patches, entry_points; the emulation package
# is left out: it stands in for the hardware) over both.
# Extra arguments go to pytest on the 0.32 line only, e.g. scripts/test.sh -k doctor (the
# 0.33 line then is skipped; NPU_PLATFORM_TEST_VLLM033=1 runs it with the same arguments).
# Each line runs on NPU_PLATFORM_TEST_WORKERS pytest-xdist workers (default 2, the CI machine's
# cores; 0 runs in this process), one test module per worker at a time: most tests wait on
# single-threaded start-ups (vLLM, sglang and dInfer imports in their own processes), so one
# stream of tests leaves a core idle much of the time.
set -euo pipefail
cd "$(dirname "$0")/.."
# The vLLM-facing tests, run again on the vLLM 0.33 line; the 100 sleep/wake cycles, which
# measure the memory manager rather than vLLM's calls into it, run on the 0.32 line only.
VLLM033_TESTS=(tests/test_vllm_*.py
  --deselect tests/test_vllm_sleep.py::test_100_sleep_wake_cycles_do_not_grow_memory)
run_033=${NPU_PLATFORM_TEST_VLLM033:-$([ $# -eq 0 ] && echo 1 || echo 0)}
workers=${NPU_PLATFORM_TEST_WORKERS:-2}
# Settings of this script only: the plugin would warn about NPU_PLATFORM_ names it does not know.
unset NPU_PLATFORM_TEST_VLLM033 NPU_PLATFORM_TEST_WORKERS
# The two environments are built side by side: pip keeps one core busy, so the second build
# costs little extra time.
if [ "$run_033" = 1 ]; then
  setup_033_log=$(mktemp)
  scripts/setup.sh vllm-0.33 >"$setup_033_log" 2>&1 &
  setup_033=$!
fi
setup_status=0
scripts/setup.sh || setup_status=$?
if [ "$run_033" = 1 ]; then
  wait "$setup_033" || setup_status=$?
  cat "$setup_033_log"
  rm -f "$setup_033_log"
fi
[ "$setup_status" = 0 ] || exit "$setup_status"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

export COVERAGE_FILE="$PWD/.coverage"
XDIST=(-n "$workers" --dist loadfile --no-loadscope-reorder)
PY=.venv/bin/python
$PY -m coverage erase
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
echo "== vLLM 0.32 line (.venv: torch 2.13, vLLM 0.32.0, sglang 0.5.23): the whole suite"
$PY -m coverage run -m pytest "${XDIST[@]}" "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
status_033=0
if [ "$run_033" = 1 ]; then
  log_033=$(mktemp)
  trap 'rm -f "$log" "$log_033"' EXIT
  echo
  echo "== vLLM 0.33 line (.venv-vllm033: torch 2.14, vLLM 0.33.0): the vLLM-facing tests"
  .venv-vllm033/bin/python -m coverage run -m pytest "${XDIST[@]}" "${VLLM033_TESTS[@]}" "$@" \
    2>&1 | tee "$log_033"
  status_033=${PIPESTATUS[0]}
fi
set -e
$PY -m coverage combine -q || true
echo
echo "Line coverage of npu_platform, patches and entry_points (outside npu_platform/emulation),"
echo "measured in every process the tests started:"
$PY -m coverage report --precision=1 || true
# Repeat pytest's closing lines last, so they stay the run's closing lines.
if [ "$run_033" = 1 ]; then
  echo "vLLM 0.32 line: $(grep -E "^=+ .*(passed|failed|error).* =+$" "$log" | tail -n 1)"
  echo "vLLM 0.33 line: $(grep -E "^=+ .*(passed|failed|error).* =+$" "$log_033" | tail -n 1)"
else
  grep -E "^=+ .*(passed|failed|error).* =+$" "$log" | tail -n 1 || true
fi
[ "$status" = 0 ] && exit "$status_033"
exit "$status"

#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), lint, then run the tests.
# Extra arguments go to pytest, e.g. scripts/test.sh -k doctor
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"

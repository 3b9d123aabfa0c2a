#!/usr/bin/env bash
# From a fresh clone: install launcher with its tools, build the images the tests run, then
# lint, type-check and run the whole test suite against the local Docker engine.
#
#   bash scripts/test.sh [PYTEST ARGS…]
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"

bash scripts/setup-venv.sh
bash scripts/ensure-base-image.sh
.venv/bin/launcher image build

echo "== ruff"
.venv/bin/ruff check launcher tests benchmarks
.venv/bin/ruff format --check launcher tests benchmarks
echo "== mypy --strict"
.venv/bin/mypy launcher
echo "== pytest"
export TESTCONTAINERS_RYUK_DISABLED=true
.venv/bin/pytest "$@"

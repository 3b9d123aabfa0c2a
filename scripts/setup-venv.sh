#!/usr/bin/env bash
# Create (or reuse) .venv with launcher (distribution worktree-launcher) and its development
# tools installed, editable: images/ is read from this checkout.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# The distribution was named `launcher` before it got a name of its own on PyPI. A venv made then
# holds that editable install of this checkout; left in place, two distributions would own the
# same package and `launcher` command, and uninstalling either would break the other.
old="$(.venv/bin/python -m pip show launcher 2>/dev/null || true)"
if grep -qxF "Editable project location: $PWD" <<<"$old"; then
    .venv/bin/python -m pip uninstall --quiet --yes launcher
fi
.venv/bin/python -m pip install --quiet -e '.[dev]'

#!/usr/bin/env bash
# From a fresh clone: install launcher, build the agent image, and run one agent on a demo
# repository with the embedded defaults (SQLite coordinator, local Docker engine).
#
#   bash scripts/quickstart.sh [WORKDIR]
#
# WORKDIR (default: ./quickstart) gets a case root and a small git repository.
# LAUNCHER_BIN=PATH uses that launcher command (e.g. from `pipx install .` or a wheel) instead of
# setting up .venv.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mkdir -p "${1:-$here/quickstart}" && cd "${1:-$here/quickstart}" && pwd)"

if [ -n "${LAUNCHER_BIN:-}" ]; then
    launcher_bin="$LAUNCHER_BIN"
else
    bash "$here/scripts/setup-venv.sh"
    launcher_bin="$here/.venv/bin/launcher"
fi
bash "$here/scripts/ensure-base-image.sh"
launcher() { "$launcher_bin" "$@"; }
launcher image build   # agent-base and egress-proxy

repo="$work/demo-repo"
if [ ! -d "$repo/.git" ]; then
    git init -q -b main "$repo"
    printf '# demo\n' >"$repo/README.md"
    git -C "$repo" add -A
    git -C "$repo" -c user.name=quickstart -c user.email=quickstart@example.invalid commit -qm "initial commit"
fi

export CASE_ROOT="$work/case"
mkdir -p "$CASE_ROOT"
launcher init
launcher run --repo "$repo" --title "Add a greeting" -- bash -c '
    echo "agent: task $CASE_TASK_ID, run $CASE_RUN_ID, branch $CASE_BRANCH, uid $(id -u)"
    echo "hello from $CASE_RUN_ID" > GREETING.md
    git add GREETING.md && git commit -qm "Add a greeting"
    git log --oneline -n 2'
launcher ps --all
echo "quickstart: the agent's commit is on its branch:"
git -C "$repo" log --oneline --all --decorate -n 3
# The egress proxy outlives runs (the next run reuses it); gc removes it once no run needs it.
launcher gc

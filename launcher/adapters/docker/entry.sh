#!/bin/sh
# launcher's entry inside a run's container (mounted read-only at /launcher/entry.sh).
#
# 1. Check out the run's branch as the run's own uid (the host only made an empty worktree).
# 2. Backdate the checked-out files and refresh the index: with a read-only shared object
#    store, files as new as the index are "racily clean", and a later `git add` would write a
#    duplicate of every one of them into the run's object directory.
# 3. Run the agent.
# 4. Bundle the run's commits for the host, which imports them without running git in the
#    agent-written worktree. LAUNCHER_PHASE=harvest does only this step (for killed agents).
set -u
cd /workspace || { echo "launcher-entry: /workspace is missing" >&2; exit 125; }

bundle() {
    head=$(git rev-parse -q --verify HEAD) || return 0
    [ "$head" = "$LAUNCHER_BASE_SHA" ] && return 0
    git bundle create -q /launcher/out/run.bundle HEAD --not "$LAUNCHER_BASE_SHA" \
        || echo "launcher-entry: could not bundle the run's commits" >&2
}

if [ "${LAUNCHER_PHASE:-run}" = harvest ]; then
    bundle
    exit 0
fi

if ! git reset -q --hard; then
    echo "launcher-entry: checkout of the run's branch failed" >&2
    exit 125
fi
now=$(date +%s)
git ls-files -z | xargs -0 -r touch -h -d "@$((now - 2))" -- 2>/dev/null
git update-index -q --refresh >/dev/null 2>&1

"$@"
rc=$?
bundle
exit $rc

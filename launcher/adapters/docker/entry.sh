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
#
# LAUNCHER_PHASE=pool (a warm pool slot): steps 1-2 happen ahead of time, then the container
# says it is ready and blocks on /launcher/ctl/go until a run takes the slot. The host then
# writes the run's environment and command to /launcher/ctl/spec.sh (quoted by the host,
# owned by this uid) and a line to the FIFO. The host moved HEAD to the run's branch; when
# the run's base differs from the warmed one, the reset rewrites only the files that differ.
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

reset_to_head() {
    if ! git reset -q --hard; then
        echo "launcher-entry: checkout of the run's branch failed" >&2
        exit 125
    fi
}

# Backdates the NUL-separated paths on stdin, then refreshes the index.
backdate() {
    now=$(date +%s)
    # -c: paths outside a sparse checkout are listed but absent, and must stay absent.
    xargs -0 -r touch -c -h -d "@$((now - 2))" -- 2>/dev/null
    git update-index -q --refresh >/dev/null 2>&1
}

# A run took this slot: its branch at its base, its identity, its .case/ scope and task copy.
# Done here, as the slot's uid, because the host never writes where this container could
# have left symlinks.
take_slot() {
    task=$LAUNCHER_TAKE_TASK
    warm_branch=$(git symbolic-ref -q HEAD) &&
        git update-ref "refs/heads/$LAUNCHER_TAKE_BRANCH" "$LAUNCHER_BASE_SHA" &&
        git symbolic-ref HEAD "refs/heads/$LAUNCHER_TAKE_BRANCH" &&
        git update-ref -d "$warm_branch" &&
        git config user.email "$LAUNCHER_TAKE_EMAIL" || {
        echo "launcher-entry: could not move the slot to the run's branch" >&2
        exit 125
    }
    if [ -n "$LAUNCHER_TAKE_BASE_BRANCH" ] && [ "$LAUNCHER_TAKE_BASE_BRANCH" != "$LAUNCHER_TAKE_BRANCH" ]; then
        git update-ref "refs/heads/$LAUNCHER_TAKE_BASE_BRANCH" "$LAUNCHER_BASE_SHA"
    fi
    mkdir -p ".case/$task" &&
        printf '%s\n' "$task" >.case/active &&
        printf '%s' "$LAUNCHER_TAKE_TASK_JSON" >".case/$task/task.json" || {
        echo "launcher-entry: could not write the run's .case/ scope" >&2
        exit 125
    }
    if [ -n "$LAUNCHER_TAKE_TASKS_VIEW" ]; then
        mkdir -p /case/tasks/active &&
            printf '%s' "$LAUNCHER_TAKE_TASK_JSON" >"/case/tasks/active/$task.task.json" || {
            echo "launcher-entry: could not write the run's task copy" >&2
            exit 125
        }
        if [ -n "$LAUNCHER_TAKE_HAS_MD" ]; then
            printf '%s' "$LAUNCHER_TAKE_TASK_MD" >"/case/tasks/active/$task.md"
        fi
    fi
    unset LAUNCHER_TAKE_TASK_JSON LAUNCHER_TAKE_TASK_MD
}

reset_to_head
git ls-files -z | backdate
if [ "${LAUNCHER_PHASE:-run}" = pool ]; then
    warmed=$(git rev-parse -q --verify HEAD)
    # Opened before saying ready (read-write, so the open does not wait for a writer): a run
    # that takes the slot the moment it is published finds a reader, not a dead slot.
    exec 3<>/launcher/ctl/go || exit 125
    echo "launcher-pool: ready"
    read -r _go <&3 || exit 125
    exec 3<&-
    . /launcher/ctl/spec.sh
    take_slot
    if [ "$(git rev-parse -q --verify HEAD)" != "$warmed" ]; then
        # Only the files that differ are rewritten, and only those are backdated: build
        # tools keep seeing the rest as untouched.
        reset_to_head
        git diff -z --name-only --no-renames --diff-filter=d "$warmed" HEAD | backdate
    fi
fi

"$@"
rc=$?
bundle
exit $rc

#!/bin/sh
# launcher's entry inside a run's container (mounted read-only at /launcher/entry.sh).
#
# 1. Check out the run's branch as the run's own uid (the host only made an empty worktree).
# 2. Backdate the checked-out files as new as the index and refresh the index: with a
#    read-only shared object store, such "racily clean" files would each be written again, as
#    a duplicate, into the run's object directory by a later `git add -A` (see backdate).
# 3. Run the agent.
# 4. Capture everything the run made in one bundle for the host, which imports it without
#    running git in the agent-written worktree (see capture below). LAUNCHER_PHASE=harvest
#    does only this step (for killed agents).
#
# LAUNCHER_PHASE=pool (a warm pool slot): steps 1-2 happen ahead of time, then the container
# says it is ready and blocks on /launcher/ctl/go until a run takes the slot. The host then
# writes the run's environment and command to /launcher/ctl/spec.sh (quoted by the host,
# owned by this uid) and a line to the FIFO. The host moved HEAD to the run's branch; when
# the run's base differs from the warmed one, the reset rewrites only the files that differ.
set -u
cd /workspace || { echo "launcher-entry: /workspace is missing" >&2; exit 125; }

# git for the capture: whatever the agent configured, nothing of its own runs while it is made.
g() {
    git -c core.fsmonitor=false -c core.hooksPath=/dev/null "$@"
}

# Everything the run made, in /launcher/out/run.bundle: HEAD's commits, every other branch and
# tag, each stash (stash@{n} as refs/launcher/stash/<n>) and the uncommitted and untracked work
# as a commit on HEAD (refs/launcher/wip). Ignored files and .case/ (the run's scope) are left
# out, and so are nested repositories. refs/launcher/ is launcher's: whatever the agent put
# there is replaced. Then, last, /launcher/out/capture says on its first line "ok", or what
# could not be kept (without an "ok" the host keeps the worktree), then what was left out.
capture() {
    out=/launcher/out
    rm -f "$out/run.bundle" "$out/capture"
    problems=
    tmp=$(mktemp -d) || { echo "launcher-entry: no temporary folder for the capture" >&2; return; }
    g for-each-ref --format='delete %(refname)' refs/launcher/ | g update-ref --stdin ||
        problems="$problems; could not clear refs/launcher/"
    head=$(g rev-parse -q --verify 'HEAD^{commit}') || head=
    capture_wip || problems="$problems; could not capture the uncommitted work"
    if [ -s "$tmp/add-errors" ]; then
        problems="$problems; $(head -c 2000 "$tmp/add-errors" | tr '\n' ' ')"
    fi
    capture_stashes || problems="$problems; could not capture the stashes"
    current=$(g symbolic-ref -q HEAD) || current=
    {
        if [ -n "$head" ] && [ "$head" != "$LAUNCHER_BASE_SHA" ]; then echo HEAD; fi
        # The ref HEAD is on travels as HEAD; refs still at the base carry nothing new.
        g for-each-ref --format='%(objectname) %(refname)' refs/heads/ refs/tags/ refs/launcher/ |
            while read -r sha ref; do
                [ "$ref" = "$current" ] || [ "$sha" = "$LAUNCHER_BASE_SHA" ] || echo "$ref"
            done
    } >"$tmp/refs"
    if [ -s "$tmp/refs" ]; then
        echo "^$LAUNCHER_BASE_SHA" >>"$tmp/refs"
        # git refuses an empty bundle: refs that are all in the base's history made nothing new.
        if [ -n "$(g rev-list -n 1 --stdin <"$tmp/refs")" ]; then
            g bundle create -q "$out/run.bundle" --stdin <"$tmp/refs" 2>"$tmp/bundle-errors" || {
                cat "$tmp/bundle-errors" >&2
                problems="$problems; could not bundle the run's work"
            }
        fi
    fi
    {
        printf '%s\n' "${problems:-ok}" | sed 's/^; //'
        if [ -s "$tmp/nested" ]; then sed 's|^|left out (a nested repository): |' "$tmp/nested"; fi
    } >"$out/capture" || echo "launcher-entry: could not write the capture note" >&2
    rm -rf "$tmp"
    [ -z "$problems" ] || echo "launcher-entry: capture incomplete: ${problems#; }" >&2
}

# The uncommitted work as a commit on HEAD (a root commit on an unborn branch), made in
# throwaway indexes so the agent's own index is untouched: its tree is the files as they are
# (tracked and untracked, not ignored); when what was staged differs from both HEAD and the
# files, that is a second parent.
capture_wip() {
    index=$(g rev-parse --git-path index) || return 1
    empty=$(g hash-object -t tree /dev/null) || return 1
    head_tree=$empty parents=
    if [ -n "$head" ]; then
        head_tree=$(g rev-parse "$head^{tree}") || return 1
        parents="-p $head"
    fi
    export GIT_AUTHOR_NAME=launcher GIT_AUTHOR_EMAIL=launcher@launcher.invalid
    export GIT_COMMITTER_NAME=launcher GIT_COMMITTER_EMAIL=launcher@launcher.invalid
    staged=
    if [ -f "$index" ] && cp "$index" "$tmp/staged"; then
        # Fails with conflicts still unresolved; the files then hold what there is.
        staged=$(scope_out "$tmp/staged" && GIT_INDEX_FILE=$tmp/staged g write-tree 2>/dev/null) || staged=
        cp "$index" "$tmp/files" || return 1
    fi
    # Nested repositories (git lists them as "dir/") are not the run's to hand over: left out,
    # and named. A name git had to quote is not excluded, and fails the add below instead.
    # (.case/ is dropped from the index afterwards: excluding it here makes git refuse it as ignored.)
    echo . >"$tmp/pathspecs"
    GIT_INDEX_FILE=$tmp/files g ls-files -o --exclude-standard -- . ':(top,exclude).case' |
        sed -n 's|/$||p' >"$tmp/nested"
    while read -r dir; do
        printf ':(top,exclude,literal)%s\n' "$dir"
    done <"$tmp/nested" >>"$tmp/pathspecs"
    # No index: the checkout never happened (nothing to keep), or the agent removed it. Then
    # an empty one: every file on disk is kept.
    GIT_INDEX_FILE=$tmp/files g add -A --ignore-errors --pathspec-from-file="$tmp/pathspecs" 2>"$tmp/add-out" ||
        add_failed=1
    # What git could not read (a file or folder the agent made unreadable) is not kept.
    sed -n -e '/^error:/p' -e '/^fatal:/p' -e '/^warning: could not open/p' "$tmp/add-out" >"$tmp/add-errors"
    if [ "${add_failed:-}" ] && [ ! -s "$tmp/add-errors" ]; then
        return 1
    fi
    scope_out "$tmp/files" || return 1
    files=$(GIT_INDEX_FILE=$tmp/files g write-tree) || return 1
    if [ ! -f "$index" ] && [ "$files" = "$empty" ]; then
        return 0
    fi
    on_head=$parents
    if [ -n "$staged" ] && [ "$staged" != "$head_tree" ] && [ "$staged" != "$files" ]; then
        # shellcheck disable=SC2086 # "-p SHA", or nothing
        on_index=$(g commit-tree "$staged" $on_head -m "launcher: what run ${CASE_RUN_ID:-} had staged") || return 1
        parents="$parents -p $on_index"
    fi
    [ "$files" != "$head_tree" ] || [ "$parents" != "$on_head" ] || return 0
    # shellcheck disable=SC2086 # "-p SHA" pairs
    wip=$(g commit-tree "$files" $parents -m "launcher: uncommitted work of run ${CASE_RUN_ID:-}") &&
        g update-ref refs/launcher/wip "$wip"
}

# .case/ (the run's scope) in the index file $1 as it is in HEAD: what the run changed there,
# staged or not, is not its work.
scope_out() {
    if [ -n "$head" ]; then
        GIT_INDEX_FILE=$1 g reset -q "$head" -- ':(top).case' >/dev/null
    else
        GIT_INDEX_FILE=$1 g rm -r -q --cached --ignore-unmatch -- ':(top).case' >/dev/null
    fi || return 1
    # The files [run] include copied in are the owner's, not the run's work, whatever the agent
    # did to info/exclude (their names are plain: no spaces, no glob characters).
    for included in ${included_paths:-}; do
        if [ -n "$head" ]; then
            GIT_INDEX_FILE=$1 g reset -q "$head" -- ":(top,literal)$included" >/dev/null
        else
            GIT_INDEX_FILE=$1 g rm -q --cached --ignore-unmatch -- ":(top,literal)$included" >/dev/null
        fi || return 1
    done
}

# stash@{0}, stash@{1}, … as refs/launcher/stash/0, 1, …: a bundle carries refs, not reflogs.
capture_stashes() {
    stashes=$(g reflog show --format=%H refs/stash -- 2>/dev/null) || stashes=
    [ -n "$stashes" ] || stashes=$(g rev-parse -q --verify refs/stash) || return 0
    n=0
    for sha in $stashes; do
        g update-ref "refs/launcher/stash/$n" "$sha" || return 1
        n=$((n + 1))
    done
}

if [ "${LAUNCHER_PHASE:-run}" = harvest ]; then
    capture
    exit 0
fi

reset_to_head() {
    if ! git reset -q --hard; then
        echo "launcher-entry: checkout of the run's branch failed" >&2
        exit 125
    fi
}

# Backdates those of the NUL-separated paths on stdin that are "racily clean", then refreshes
# the index. A file written in the same second as the index cannot be told by its stat from one
# changed in that second, so `git add -A` hashes each such file again and writes a copy of it
# into the run's object directory (the shared objects are read-only: git cannot just freshen
# them). Backdated to before that second, with the index refreshed, they are clean; files
# written in an earlier second already are, and are left alone (the refresh hashes only what
# was backdated). Without GNU find's -files0-from (busybox), every path is backdated.
backdate() {
    index=$(git rev-parse --git-path index) && written=$(stat -c %Y -- "$index") &&
        work=$(mktemp -d) || { cat >/dev/null; return 0; }
    cat >"$work/paths"
    touch -d "@$((written - 1)).999999999" -- "$work/second"
    if find -files0-from /dev/null 2>/dev/null; then
        # -files0-from: a name is never read as one of find's options. Absent ones (outside a
        # sparse checkout) are skipped: find says so and exits 1, which changes nothing here.
        find -files0-from "$work/paths" -maxdepth 0 ! -type d -newer "$work/second" -print0 \
            >"$work/racy" 2>/dev/null
        mv -f -- "$work/racy" "$work/paths"
    fi
    # -c: paths outside a sparse checkout are listed but absent, and must stay absent.
    if [ -s "$work/paths" ]; then
        xargs -0 -r touch -c -h -d "@$((written - 2))" -- <"$work/paths" 2>/dev/null
        git update-index -q --refresh >/dev/null 2>&1
    fi
    rm -rf -- "$work"
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

# The run's extra CA ([network] ca_file, --ca-file) joins the image's own CAs. The image's bundle
# cannot change (read-only root, any uid), so a copy of it plus the extra CA is written to
# $LAUNCHER_CA_BUNDLE in the run's /tmp, which SSL_CERT_FILE, REQUESTS_CA_BUNDLE, PIP_CERT,
# GIT_SSL_CAINFO and CURL_CA_BUNDLE name (see launcher/core/run/trust.py).
if [ -n "${LAUNCHER_EXTRA_CA:-}" ]; then
    system=
    for f in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt /etc/ssl/cert.pem; do
        if [ -s "$f" ]; then
            system=$f
            break
        fi
    done
    [ -n "$system" ] || echo "launcher-entry: the image has no CA bundle; the run trusts only the extra CA" >&2
    { if [ -n "$system" ]; then cat "$system" && echo; fi && cat "$LAUNCHER_EXTRA_CA"; } >"$LAUNCHER_CA_BUNDLE" || {
        echo "launcher-entry: cannot write the run's CA bundle $LAUNCHER_CA_BUNDLE" >&2
        exit 125
    }
    unset system f
fi

# Secrets come as files (the container's configuration, which `docker inspect` shows, holds only
# their paths): each NAME listed in LAUNCHER_SECRETS is exported from /run/launcher-secrets/NAME,
# byte for byte (the x keeps trailing newlines), for the agent alone.
for name in ${LAUNCHER_SECRETS:-}; do
    value=$(cat "/run/launcher-secrets/$name" && printf x) || {
        echo "launcher-entry: cannot read the secret $name" >&2
        exit 125
    }
    export "$name=${value%x}"
done
unset LAUNCHER_SECRETS name value

# [run] include: untracked files of the main checkout, copied in by this uid after the checkout
# (the host never writes into the worktree) and listed in the private git dir's info/exclude,
# so that no `git add -A` takes them. A path the checkout tracks keeps the checkout's copy; one
# under a (tracked) symbolic link is not copied.
include_files() {
    exclude=$(git rev-parse --git-path info/exclude) && mkdir -p "${exclude%/*}" || return 1
    i=0
    while [ "$i" -lt "${LAUNCHER_INCLUDE_COUNT:-0}" ]; do
        eval "path=\${LAUNCHER_INCLUDE_$i}"
        printf '/%s\n' "$path" >>"$exclude" || return 1
        if git ls-files --error-unmatch -- ":(top,literal)$path" >/dev/null 2>&1; then
            echo "launcher-include: $path is tracked at the run's base: the checkout's copy stays" >&2
        elif ! plain_parents "$path"; then
            echo "launcher-include: $path is under a symbolic link in the checkout: not copied" >&2
        else
            case $path in */*) mkdir -p "${path%/*}" || return 1 ;; esac
            cat "/launcher/include/$i" >"$path" || return 1
            included_paths="${included_paths:-} $path"
        fi
        i=$((i + 1))
    done
}

# No folder on the way to $1 is a symbolic link.
plain_parents() {
    rest=$1 dir=
    while [ "${rest#*/}" != "$rest" ]; do
        dir=${dir:+$dir/}${rest%%/*}
        rest=${rest#*/}
        [ ! -L "$dir" ] || return 1
    done
}

# [run] setup (and the agent profile's): each command as `sh -c CMD`, in order, before the agent,
# each announced in the log. The first that fails ends the run: out/setup-failed says which
# (its exit status, then the command), the work is captured, and the agent never starts.
SETUP_FAILED=121
run_setup() {
    i=0
    while [ "$i" -lt "${LAUNCHER_SETUP_COUNT:-0}" ]; do
        eval "setup_cmd=\${LAUNCHER_SETUP_$i}"
        echo "launcher-setup: \$ $setup_cmd"
        sh -c "$setup_cmd" </dev/null
        status=$?
        if [ "$status" -ne 0 ]; then
            echo "launcher-setup: exit $status: $setup_cmd (the agent does not run)"
            printf '%s\n%s\n' "$status" "$setup_cmd" >/launcher/out/setup-failed
            return 1
        fi
        i=$((i + 1))
    done
    if [ "${LAUNCHER_SETUP_COUNT:-0}" -gt 0 ]; then echo "launcher-setup: done"; fi
}

# What the agent left running when its command returned (a server, a background job, a fork
# bomb) is stopped before the capture: the capture is then of files nobody is still writing,
# and git finds the pids it needs to fork. kill -1 reaches every process of this uid but the
# init and this shell; it fails once there is none left. Bounded: a process forked while the
# kernel walked the list is caught by the next round.
stop_leftovers() {
    rounds=0
    while [ "$rounds" -lt 100 ] && kill -s KILL -- -1 2>/dev/null; do
        rounds=$((rounds + 1))
    done
}

rm -f /launcher/out/setup-failed
if ! include_files; then
    echo "launcher-entry: could not copy the included files" >&2
    exit 125
fi
if ! run_setup; then
    stop_leftovers
    capture
    exit $SETUP_FAILED
fi
i=0
while [ "$i" -lt "${LAUNCHER_SETUP_COUNT:-0}" ]; do
    unset "LAUNCHER_SETUP_$i"
    i=$((i + 1))
done
unset LAUNCHER_SETUP_COUNT setup_cmd status i

"$@"
rc=$?
stop_leftovers
capture
exit $rc

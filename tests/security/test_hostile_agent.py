"""A hostile agent can change its own worktree and branch, and nothing else.

Each agent below tries something it must not manage; the test checks from the host that it
failed: the shared repository's refs and objects, the main checkout, other runs, the state
store, the host's file system and the coordinator's verdicts are all as they were.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import (
    Case,
    agent_image,
    case,
    facts,
    head_of,
    launcher_roots,
    make_repo,
    repo_git,
    run_id_of,
    shared_dir,
)

__all__ = ["agent_image", "case", "launcher_roots", "shared_dir"]
pytestmark = pytest.mark.docker


def ref_map(repo: Path) -> dict[str, str]:
    pairs = [
        line.split(" ") for line in repo_git(repo, "for-each-ref", "--format=%(refname) %(objectname)").splitlines()
    ]
    return {name: sha for name, sha in pairs}


def fsck_clean(repo: Path) -> None:
    proc = subprocess.run(
        ["git", "-c", f"safe.directory={repo}", "fsck", "--strict", "--no-dangling"],
        cwd=repo,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


ATTACKS = r"""
set -u
attempt() {
    name=$1; shift
    if "$@" >/dev/null 2>&1; then echo "FACT $name=succeeded"; else echo "FACT $name=failed"; fi
}
# the shared object store is mounted read-only
attempt delete_objects sh -c 'rm -rf /launcher/objects/* && [ -z "$(ls -A /launcher/objects)" ]'
attempt write_objects sh -c 'echo x > /launcher/objects/info/evil'
attempt chmod_objects chmod -R 777 /launcher/objects
# the main checkout and the harness are read-only, other runs invisible
attempt write_case sh -c 'echo x > /case/evil'
attempt see_worktrees sh -c '[ -n "$(ls -A /case/.launcher 2>/dev/null)" ]'
attempt read_state sh -c 'cat /case/.launcher/state.db'
# privilege escalation
attempt su_root sh -c 'su -c id root </dev/null'
attempt setuid0 python3 -c 'import os; os.setuid(0)'
attempt sudo sudo -n id
# the .git file pointing at the private git dir is read-only
attempt rewrite_gitfile sh -c 'echo "gitdir: /tmp/x" > /workspace/.git'
# moving the base branch in its own git dir changes only its own copy
git update-ref refs/heads/main HEAD~0 2>/dev/null
echo "evil" > evil.txt && git add evil.txt && git commit -qm evil && git update-ref refs/heads/main HEAD
git branch -f other-run-branch HEAD
# hooks and config in its private git dir must never run on the host
mkdir -p /launcher/git/hooks
printf '#!/bin/sh\ntouch "$HOST_CANARY"\n' > /launcher/git/hooks/post-checkout
chmod +x /launcher/git/hooks/post-checkout
git config core.fsmonitor "touch $HOST_CANARY"
git config core.hooksPath /launcher/git/hooks
# an evidence marker that is a symlink to a host file
mkdir -p ".case/$CASE_TASK_ID"
ln -sf /etc/shadow ".case/$CASE_TASK_ID/tested"
python3 - "$CASE_ROOT/tasks/active/$CASE_TASK_ID.task.json" <<'PY'
import json, sys
path = sys.argv[1]
doc = json.load(open(path))
doc["tested"] = True
doc["status"] = "merged"
doc["repo"] = "somewhere-else"
doc["launcherOwned"] = True
json.dump(doc, open(path, "w"))
PY
git config --unset core.fsmonitor
"""


def test_hostile_agent_changes_only_its_own_branch(case: Case, shared_dir: Path) -> None:
    repo = make_repo(shared_dir / "repo")
    canary = shared_dir / f"canary-{uuid.uuid4().hex}"
    bystander = case.create_task(repo, "Bystander")
    assert case.cli("run", bystander, "--", "sh", "-c", "git commit -q --allow-empty -m mine").exit_code == 0
    before = ref_map(repo)
    checkout_before = repo_git(repo, "status", "--porcelain=v2", "--branch")
    task = case.create_task(repo, "Hostile")

    result = case.cli("run", task, "--", "bash", "-c", f"HOST_CANARY={canary}\n{ATTACKS}")

    assert result.exit_code == 0, result.stdout + result.stderr
    seen = facts(result.stdout)
    for attack in (
        "delete_objects",
        "write_objects",
        "chmod_objects",
        "write_case",
        "see_worktrees",
        "read_state",
        "su_root",
        "setuid0",
        "sudo",
        "rewrite_gitfile",
    ):
        assert seen.get(attack) == "failed", (attack, seen)

    after = ref_map(repo)
    run = case.run_record(run_id_of(result.stderr))
    mine = f"refs/heads/{run['branch']}"
    kept = f"refs/launcher/runs/{run['id']}/"
    assert {k: v for k, v in after.items() if k != mine and not k.startswith(kept)} == before
    assert repo_git(repo, "log", "-1", "--format=%s", mine).strip() == "evil"
    # What it did to its copies of other branches is kept, under its own refs only.
    assert {k: v for k, v in after.items() if k.startswith(kept)} == {
        f"{kept}heads/main": after[mine],
        f"{kept}heads/other-run-branch": after[mine],
    }
    assert head_of(repo, "main") == before["refs/heads/main"]
    assert repo_git(repo, "status", "--porcelain=v2", "--branch") == checkout_before
    fsck_clean(repo)
    assert not canary.exists(), "a hook or config the agent planted ran on the host"

    changes = run["details"]["task_changes"]
    refused = " ".join(changes["refused"])
    assert "tested" in refused
    assert "illegal transition active -> merged" in refused
    assert "repo: read-only" in refused
    assert "launcherOwned" in refused
    assert "tested" not in run["details"]["task_changes"]["markers"]
    shown = case.json("task", "show", task)
    assert shown["status"] == "active"
    assert shown["doc"]["tested"] is False
    assert "launcherOwned" not in shown["doc"]
    assert shown["doc"]["repo"] == "repo"


def test_forged_bundles_are_refused_and_the_branch_stays_at_its_base(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo, "main")
    symlinked = case.create_task(git_repo, "Symlinked bundle")
    orphan = case.create_task(git_repo, "Orphan history")

    first = case.cli(
        "run",
        symlinked,
        "--",
        "sh",
        "-c",
        "git commit -q --allow-empty -m x; sleep 0; ln -sf /etc/passwd /launcher/out/run.bundle; exit 0",
    )
    # The entry script bundles after the agent exits, replacing the agent's symlink only if
    # it can; either way the host must never follow a link out of the run's folders.
    record = case.run_record(run_id_of(first.stderr))
    harvest = record["details"].get("harvest") or {}
    assert "passwd" not in str(harvest)

    second = case.cli(
        "run",
        orphan,
        "--",
        "sh",
        "-c",
        "git checkout -q --orphan fresh && git commit -q --allow-empty -m unrelated",
    )
    record = case.run_record(run_id_of(second.stderr))
    errors = " ".join(record["details"].get("errors") or [])
    assert "does not descend from its base" in errors
    assert head_of(git_repo, f"refs/heads/{record['branch']}") == base
    fsck_clean(git_repo)


def test_fork_bomb_is_contained_and_other_runs_finish(case: Case, git_repo: Path) -> None:
    (case.root / "launcher.toml").write_text("[run]\npids_limit = 64\n")
    bomb = case.create_task(git_repo, "Fork bomb")
    calm = case.create_task(git_repo, "Calm neighbour")
    bomber = case.popen("run", "--timeout", "20", bomb, "--", "bash", "-c", "b() { b | b & }; b; sleep 8")
    neighbour = case.cli("run", calm, "--", "sh", "-c", "git commit -q --allow-empty -m calm && echo FACT calm=done")
    assert neighbour.exit_code == 0, neighbour.stderr
    assert facts(neighbour.stdout)["calm"] == "done"
    bomber.wait(timeout=120)
    states = {r["task_id"]: r["state"] for r in case.runs()}
    assert states[calm] == "exited"
    # Never unharvested: the bomb's leftovers are stopped before the capture needs to fork.
    assert states[bomb] in {"exited", "failed", "timed-out"}


def test_work_is_kept_when_the_agent_leaves_every_pid_taken(case: Case, git_repo: Path) -> None:
    # The agent returns with background processes holding all its pids: the capture still forks
    # git, because those leftovers are stopped first.
    (case.root / "launcher.toml").write_text("[run]\npids_limit = 32\n")
    task = case.create_task(git_repo, "Leaves every pid taken")
    # The inner shell dies of "Cannot fork" once the pids run out; the outer one exits 0 (a builtin).
    spawn = "i=0; while [ $i -lt 64 ]; do sleep 600 & i=$((i + 1)); done"
    agent = f"echo kept > kept.txt; sh -c '{spawn}' 2>/dev/null; exit 0"
    result = case.cli("run", task, "--", "sh", "-c", agent)
    assert result.exit_code == 0, result.stderr
    record = case.run_record(run_id_of(result.stderr))
    assert record["state"] == "exited", record
    wip = f"refs/launcher/runs/{record['id']}/wip"
    shown = subprocess.run(["git", "-C", str(git_repo), "show", f"{wip}:kept.txt"], capture_output=True, text=True)
    assert shown.stdout == "kept\n", shown.stderr


def test_memory_hog_is_oom_killed_and_recorded(case: Case, git_repo: Path) -> None:
    (case.root / "launcher.toml").write_text('[run]\nmemory = "64m"\n')
    task = case.create_task(git_repo, "Memory hog")
    result = case.cli("run", task, "--", "python3", "-c", "x = bytearray(512 * 1024 * 1024)")
    assert result.exit_code == 10, result.stderr
    record = case.run_record(run_id_of(result.stderr))
    assert record["state"] == "failed"
    assert record["exit_code"] == 137
    assert record["details"]["oom_killed"] is True
    assert "out of memory" in result.stderr


def test_secrets_of_one_run_are_invisible_to_another(case: Case, git_repo: Path) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    holder = case.create_task(git_repo, "Holds a secret")
    snoop = case.create_task(git_repo, "Snoops")
    holding = case.popen("run", "--secret", "API_TOKEN", holder, "--", "sleep", "20", env={"API_TOKEN": secret})
    try:
        case.wait_running(holder)
        probe = case.cli(
            "run",
            snoop,
            "--",
            "sh",
            "-c",
            f"cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {secret} || true;"
            f" env | grep -c {secret} || true",
        )
        assert probe.exit_code == 0, probe.stderr
        assert secret not in probe.stdout
        assert [line for line in probe.stdout.split() if line.isdigit()] == ["0", "0"]
    finally:
        case.cli("stop", case.run_of(holder))
        holding.wait(timeout=60)

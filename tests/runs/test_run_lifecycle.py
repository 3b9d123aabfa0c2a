"""How runs end: exited, failed, timed out, cancelled, lost (launcher killed) and settled by gc.

Each path must end with the run recorded in its state, its commits harvested onto its branch,
its container gone, and its worktree removed (or kept, when asked).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from runkit import Case, branches, head_of, repo_git, run_id_of, wait_for, worktree_paths

from launcher.errors import ExitCode

pytestmark = pytest.mark.docker

COMMIT_THEN_SLEEP = r"""
set -eu
echo "before the sleep" > early.txt
git add early.txt
git commit -q -m "committed before sleeping"
echo "agent: committed, now sleeping"
exec sleep 600
"""


def assert_settled(case: Case, repo: Path, run: dict[str, object]) -> None:
    """No container, no worktree (git's list and the folder), no sandbox folder left for ``run``."""
    assert case.containers() == []
    assert worktree_paths(repo) == [str(repo)]
    assert not Path(str(run["worktree"])).exists()
    assert not (case.root / ".launcher" / "sandboxes" / str(run["id"])).exists()


@pytest.mark.slow
def test_timeout_kills_the_agent_records_timed_out_and_harvests_earlier_commits(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    started = time.monotonic()

    result = case.cli(
        "run",
        "--timeout",
        "2",
        "--repo",
        str(git_repo),
        "--title",
        "Sleeps too long",
        "--",
        "sh",
        "-c",
        COMMIT_THEN_SLEEP,
    )

    assert result.exit_code == ExitCode.RUN_TIMED_OUT, result.stdout + result.stderr
    assert time.monotonic() - started < 60, "the 2 s timeout did not stop a 600 s sleep promptly"
    run = case.run_record(run_id_of(result.stderr))
    assert run["state"] == "timed-out"
    assert "agent: committed, now sleeping" in result.stdout
    # The commit made before the timeout is on the run's branch (harvested after the kill).
    tip = head_of(git_repo, str(run["branch"]))
    assert repo_git(git_repo, "rev-list", f"{base}..{tip}").split() == [tip]
    assert repo_git(git_repo, "log", "-1", "--format=%s", tip).strip() == "committed before sleeping"
    assert repo_git(git_repo, "show", f"{tip}:early.txt") == "before the sleep\n"
    assert run["details"]["harvest"]["tip"] == tip
    assert_settled(case, git_repo, run)


def test_failing_agent_records_failed_with_its_exit_code(case: Case, git_repo: Path) -> None:
    result = case.cli(
        "run", "--repo", str(git_repo), "--title", "Fails", "--", "sh", "-c", "echo giving up >&2; exit 7"
    )

    assert result.exit_code == ExitCode.RUN_FAILED, result.stdout + result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["state"] == "failed"
    assert run["exit_code"] == 7
    assert "exit 7" in result.stderr
    # No commit: the branch stays at its base.
    assert head_of(git_repo, str(run["branch"])) == head_of(git_repo, "main")
    assert_settled(case, git_repo, run)


def test_logs_prints_the_agent_output(case: Case, git_repo: Path) -> None:
    agent = "echo 'line one on stdout'; echo 'line two on stderr' >&2; echo 'line three'"
    result = case.cli("run", "--repo", str(git_repo), "--title", "Talks", "--", "sh", "-c", agent)
    assert result.exit_code == 0, result.stderr
    run_id = run_id_of(result.stderr)

    logs = case.ok("logs", run_id)

    lines = logs.stdout.splitlines()
    for expected in ("line one on stdout", "line two on stderr", "line three"):
        assert expected in lines
    assert lines.index("line one on stdout") < lines.index("line three")
    missing = case.cli("logs", "nope-1.1")
    assert missing.exit_code == ExitCode.NOT_FOUND
    assert "nope-1.1" in missing.stderr


def test_detached_run_then_stop_records_cancelled(case: Case, git_repo: Path) -> None:
    agent = "echo 'agent started'; exec sleep 600"
    started = case.ok("run", "-d", "--repo", str(git_repo), "--title", "Detached", "--", "sh", "-c", agent)
    run_id = started.stdout.strip()
    assert run_id, started.stderr

    wait_for(
        lambda: any(r["id"] == run_id and r["state"] == "running" for r in case.runs(live_only=True)),
        timeout=60,
        what=f"run {run_id} to be running",
    )
    assert len(case.containers()) == 1
    wait_for(lambda: "agent started" in case.ok("logs", run_id).stdout, timeout=30, what="the agent's first line")

    stopped = case.ok("stop", run_id)

    assert stopped.stdout.strip() == f"{run_id}: cancelled"
    run = case.run_record(run_id)
    assert run["state"] == "cancelled"
    assert run["cancel_requested"] is True
    assert run["branch"] in branches(git_repo)
    assert_settled(case, git_repo, run)
    # Stopping it again is not an error: it has stopped. Its state is printed, nothing changes.
    again = case.cli("stop", run_id)
    assert again.exit_code == 0, again.stderr
    assert again.stdout.strip() == f"{run_id}: cancelled"
    assert case.run_record(run_id) == run


def test_rm_removes_a_kept_worktree_and_keeps_the_branch(case: Case, git_repo: Path) -> None:
    agent = "echo kept > kept.txt && git add kept.txt && git commit -q -m 'kept work'"
    result = case.cli("run", "--keep-worktree", "--repo", str(git_repo), "--title", "Keep it", "--", "sh", "-c", agent)
    assert result.exit_code == 0, result.stderr
    run = case.run_record(run_id_of(result.stderr))
    worktree = Path(run["worktree"])
    assert worktree.is_dir()
    assert (worktree / "kept.txt").read_text() == "kept\n"
    assert str(worktree) in worktree_paths(git_repo)
    tip = head_of(git_repo, run["branch"])

    removed = case.ok("rm", run["id"])

    assert f"kept branch {run['branch']}" in removed.stdout
    assert not worktree.exists()
    assert worktree_paths(git_repo) == [str(git_repo)]
    assert head_of(git_repo, run["branch"]) == tip
    assert repo_git(git_repo, "log", "-1", "--format=%s", tip).strip() == "kept work"
    assert case.run_record(run["id"])["state"] == "exited"
    assert case.containers() == []


@pytest.mark.slow
def test_gc_settles_the_run_of_a_launcher_killed_mid_run(case: Case, git_repo: Path, tmp_path: Path) -> None:
    base = head_of(git_repo)
    out = (tmp_path / "launcher.out").open("wb")
    proc = case.popen(
        "run",
        "--repo",
        str(git_repo),
        "--title",
        "Orphaned",
        "--",
        "sh",
        "-c",
        COMMIT_THEN_SLEEP,
        stdout=out,
        stderr=subprocess.DEVNULL,
    )
    run = wait_for(
        lambda: next((r for r in case.runs(live_only=True) if r["state"] == "running"), None),
        timeout=60,
        what="the run to be running",
    )
    log = Path(run["log"])
    wait_for(
        lambda: log.is_file() and "now sleeping" in log.read_text(), timeout=30, what="the agent to commit and sleep"
    )

    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)  # reaped: its pid is gone, as after any real crash
    out.close()
    worktree = Path(run["worktree"])
    assert worktree.is_dir()
    assert len(case.containers()) == 1, "the agent's container outlives its launcher"

    # A dry run reports what it would do and changes nothing.
    dry = case.json("gc", "--dry-run")
    assert dry["dry_run"] is True
    kinds = {(a["kind"], a["target"]) for a in dry["actions"]}
    assert ("settle-run", run["id"]) in kinds
    assert all(a["done"] is False for a in dry["actions"])
    assert case.run_record(run["id"])["state"] == "running"
    assert [c.status for c in case.containers()] == ["running"]
    assert worktree.is_dir()
    assert str(worktree) in worktree_paths(git_repo)
    assert head_of(git_repo, run["branch"]) == base, "a dry run harvested the run's commits"

    report = case.json("gc")

    assert report["dry_run"] is False
    assert report["actions"], "gc found nothing to do"
    assert all(a["done"] and a["error"] is None for a in report["actions"]), report
    assert ("settle-run", run["id"]) in {(a["kind"], a["target"]) for a in report["actions"]}
    settled = case.run_record(run["id"])
    assert settled["state"] == "lost"
    assert_settled(case, git_repo, settled)
    # The branch stays, with the commit the agent made before its launcher died.
    assert settled["branch"] in branches(git_repo)
    tip = head_of(git_repo, settled["branch"])
    assert repo_git(git_repo, "rev-list", f"{base}..{tip}").split() == [tip]
    assert repo_git(git_repo, "log", "-1", "--format=%s", tip).strip() == "committed before sleeping"

    # Nothing left to do the second time.
    assert case.json("gc")["actions"] == []
    assert case.json("gc", "--dry-run")["actions"] == []

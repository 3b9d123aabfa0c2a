"""Stopping a run is graceful: SIGTERM to the agent, its grace period, then SIGKILL; what the agent
saves on its way out is harvested. SIGTERM and SIGHUP to a foreground `launcher run` cancel the run
as Ctrl-C does. Stopping a run that has already ended is not an error."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from runkit import Case, head_of, repo_git, run_id_of, wait_for, worktree_paths

from launcher.errors import ExitCode

pytestmark = pytest.mark.docker

# Saves its work when told to stop: a file, committed (so it must come back on the branch).
SAVES_ON_TERM = r"""
on_term() {
    sleep 1  # saving takes a moment: the grace period is what allows it
    echo "stopped with SIGTERM" > saved.txt
    git add saved.txt
    git commit -q -m "saved on SIGTERM"
    echo "agent: saved my work"
    exit 0
}
trap on_term TERM
echo "agent: working"
while :; do sleep 0.2; done
"""


def saved_commit(repo: Path, branch: str) -> str:
    tip = head_of(repo, branch)
    assert repo_git(repo, "log", "-1", "--format=%s", tip).strip() == "saved on SIGTERM"
    return repo_git(repo, "show", f"{tip}:saved.txt")


def log_of(case: Case, run_id: str) -> str:
    return Path(case.run_record(run_id)["details"]["log"]).read_text()


def test_stop_sends_sigterm_and_what_the_agent_saves_is_harvested(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "Saves on stop")
    case.ok("run", "-d", task, "--", "sh", "-c", SAVES_ON_TERM)
    run_id = case.wait_running(task)
    wait_for(lambda: "agent: working" in log_of(case, run_id), timeout=60, what="the agent to start")

    stopped = case.ok("stop", run_id)

    assert stopped.stdout.strip() == f"{run_id}: cancelled"
    run = case.run_record(run_id)
    assert run["state"] == "cancelled"
    assert saved_commit(git_repo, run["branch"]) == "stopped with SIGTERM\n"
    assert "agent: saved my work" in log_of(case, run_id)
    assert case.containers() == []
    assert worktree_paths(git_repo) == [str(git_repo)]


@pytest.mark.slow
def test_a_timeout_gives_the_agent_its_grace_period(case: Case, git_repo: Path) -> None:
    started = time.monotonic()
    result = case.cli(
        "run", "--timeout", "3", "--grace", "30", "--repo", str(git_repo), "--title", "Too slow", "--",
        "sh", "-c", SAVES_ON_TERM,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    assert result.exit_code == ExitCode.RUN_TIMED_OUT, result.stdout + result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["state"] == "timed-out"
    assert run["details"]["grace"] == 30
    assert saved_commit(git_repo, run["branch"]) == "stopped with SIGTERM\n"
    assert "agent: saved my work" in result.stdout
    assert elapsed < 30, "the agent exited on SIGTERM; launcher still waited out the whole grace period"


def test_without_a_grace_period_the_agent_is_killed_at_once(case: Case, git_repo: Path) -> None:
    result = case.cli(
        "run", "--timeout", "3", "--grace", "0", "--repo", str(git_repo), "--title", "No grace", "--",
        "sh", "-c", SAVES_ON_TERM,
    )  # fmt: skip
    assert result.exit_code == ExitCode.RUN_TIMED_OUT, result.stdout + result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert head_of(git_repo, run["branch"]) == head_of(git_repo, "main"), "the agent had no time to save"
    assert "agent: saved my work" not in result.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_signal_to_a_foreground_run_cancels_it_like_ctrl_c(
    case: Case, git_repo: Path, tmp_path: Path, signum: signal.Signals
) -> None:
    task = case.create_task(git_repo, "Cancelled by CI")
    err = (tmp_path / "stderr").open("wb")
    proc = case.popen("run", task, "--", "sh", "-c", SAVES_ON_TERM, stdout=subprocess.DEVNULL, stderr=err)
    run_id = case.wait_running(task)
    wait_for(lambda: "agent: working" in log_of(case, run_id), timeout=60, what="the agent to start")

    proc.send_signal(signum)
    code = proc.wait(timeout=120)
    err.close()

    assert code == ExitCode.RUN_CANCELLED, (tmp_path / "stderr").read_text()
    run = case.run_record(run_id)
    assert run["state"] == "cancelled"
    assert f"interrupted ({signum.name})" in run["details"]["errors"]
    assert saved_commit(git_repo, run["branch"]) == "stopped with SIGTERM\n"
    assert case.containers() == []
    assert worktree_paths(git_repo) == [str(git_repo)]


def test_stopping_a_run_that_has_ended_prints_its_state_and_succeeds(case: Case, git_repo: Path) -> None:
    result = case.cli("run", "--repo", str(git_repo), "--title", "Quick", "--", "sh", "-c", "echo done")
    assert result.exit_code == 0, result.stderr
    run_id = run_id_of(result.stderr)

    stopped = case.cli("stop", run_id)

    assert stopped.exit_code == 0, stopped.stderr
    assert stopped.stdout.strip() == f"{run_id}: exited"
    assert case.run_record(run_id)["state"] == "exited"

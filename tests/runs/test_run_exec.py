"""`launcher exec` and `launcher shell`: into a live run as its agent is, for real.

The agent waits (inside its container) for a file that only the exec'd command or the shell
writes, so the run lives exactly as long as the test needs it to.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from runkit import Case, facts, make_repo, wait_for

pytestmark = pytest.mark.docker

WAITS = 'while [ ! -f go.txt ]; do sleep 0.1; done; echo "FACT go=$(cat go.txt)"'


def running(case: Case, task: str) -> dict[str, object]:
    def found() -> dict[str, object] | None:
        runs = [r for r in case.runs(live_only=True) if r["task_id"] == task and r["state"] == "running"]
        return runs[0] if runs else None

    return wait_for(found, timeout=120, what=f"a running run of {task}")


def test_exec_runs_as_the_agent_in_its_worktree_and_returns_the_command_s_status(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "Exec into me")
    agent = case.popen("run", task, "--", "sh", "-c", WAITS)
    run = running(case, task)

    probe = case.cli(
        "exec",
        str(run["id"]),
        "--",
        "sh",
        "-c",
        'echo "FACT uid=$(id -u)"; echo "FACT pwd=$(pwd)"; echo "FACT task=$CASE_TASK_ID"; '
        'echo "FACT caps=$(grep CapEff /proc/self/status | cut -f2)"; echo to-stderr >&2; exit 7',
    )

    assert probe.exit_code == 7, probe.stdout + probe.stderr
    told = facts(probe.stdout)
    assert told["uid"] == str(run["uid"])
    assert told["pwd"] == "/workspace"
    assert told["task"] == task
    assert told["caps"] == "0000000000000000"
    assert "to-stderr" in probe.stderr
    assert case.cli("exec", str(run["id"]), "--", "sh", "-c", "echo exec-was-here > go.txt").exit_code == 0
    assert agent.wait(timeout=120) == 0
    assert facts(case.ok("logs", str(run["id"])).stdout)["go"] == "exec-was-here"

    late = case.cli("exec", str(run["id"]), "--", "true")
    assert late.exit_code == 3
    assert "only a running run's container takes commands" in late.stderr
    assert case.cli("exec", "nope-1.1", "--", "true").exit_code == 5


def test_shell_needs_a_terminal(case: Case, tmp_path: Path) -> None:
    refused = case.cli("shell", "whatever-1.1")
    assert refused.exit_code == 2
    assert "needs a terminal" in refused.stderr


@pytest.mark.skipif(shutil.which("tmux") is None, reason="this machine has no tmux (Debian: tmux)")
def test_shell_in_tmux_is_the_agent_s_view(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "Shell into me")
    agent = case.popen("run", task, "--", "sh", "-c", WAITS)
    run = running(case, task)
    session = f"launcher-test-{uuid.uuid4().hex[:8]}"
    argv = " ".join(case.argv("shell", str(run["id"])))
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "200", "-y", "50", argv], check=True)
    try:
        wait_for(lambda: "$" in capture(session) or "#" in capture(session), timeout=60, what="the shell's prompt")
        subprocess.run(["tmux", "send-keys", "-t", session, 'echo "shell as $(id -u) in $(pwd)" > go.txt', "Enter"])
        assert agent.wait(timeout=120) == 0
        subprocess.run(["tmux", "send-keys", "-t", session, "exit", "Enter"])
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False, capture_output=True)
    assert facts(case.ok("logs", str(run["id"])).stdout)["go"] == f"shell as {run['uid']} in /workspace"


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout

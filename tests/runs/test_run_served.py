"""`launcher run` through the launch service (LAUNCHER_SERVICE=on), on the real engine and git:
the same run, result and exit status as in its own process; the caller's SIGTERM cancels it as
it would have; a caller that dies hangs it up (SIGHUP), as a closed terminal would, and the run
is settled with its work kept, not left running."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest
from helpers import wait_for
from launch_service_kit import SCRIPT, Service, served_pid
from launch_service_kit import launch_service as service
from runkit import Case, facts, head_of, run_id_of, worktree_paths
from test_run_stop import SAVES_ON_TERM, log_of, saved_commit

from launcher.errors import ExitCode

__all__ = ["service"]
pytestmark = [
    pytest.mark.docker,
    pytest.mark.skipif(SCRIPT is None, reason="launcher's console script is not installed beside this Python"),
]

AGENT = 'echo "FACT run=$CASE_RUN_ID"; echo served > served.txt; git add served.txt; git commit -qm served'


def served_run(case: Case, service: Service, *args: str, stderr: object) -> subprocess.Popen[bytes]:
    assert SCRIPT is not None
    proc = subprocess.Popen(
        [SCRIPT, "--root", str(case.root), "run", *args], env=service.env(), stdout=subprocess.PIPE, stderr=stderr
    )
    case.procs.append(proc)
    return proc


def test_a_served_run_is_the_same_run_with_the_same_result(case: Case, service: Service, git_repo: Path) -> None:
    service.start()
    task = case.create_task(git_repo, "Served")
    proc = served_run(case, service, task, "--network", "none", "--", "sh", "-c", AGENT, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 0, err.decode()
    assert served_pid(err.decode()) is not None, err.decode()
    run_id = run_id_of(err.decode())
    assert facts(out.decode())["run"] == run_id
    run = case.run_record(run_id)
    assert (run["state"], run["exit_code"]) == ("exited", 0)
    assert head_of(git_repo, run["branch"]) != head_of(git_repo, "main"), "the agent's commit is on its branch"
    assert case.containers() == []


@pytest.mark.parametrize("how", ["SIGTERM", "killed caller"])
def test_a_served_run_is_cancelled_by_its_callers_signal_or_its_death(
    case: Case, service: Service, git_repo: Path, tmp_path: Path, how: str
) -> None:
    service.start()
    task = case.create_task(git_repo, "Cancelled through the service")
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err:
        proc = served_run(case, service, task, "--", "sh", "-c", SAVES_ON_TERM, stderr=err)
        run_id = case.wait_running(task)
        wait_for(lambda: "agent: working" in log_of(case, run_id), timeout=60, what="the agent to start")
        proc.send_signal(signal.SIGTERM if how == "SIGTERM" else signal.SIGKILL)
        code = proc.wait(timeout=120)
    if how == "SIGTERM":
        assert code == ExitCode.RUN_CANCELLED, err_path.read_text()
        expected = "interrupted (SIGTERM)"
    else:
        assert code == -signal.SIGKILL
        expected = "interrupted (SIGHUP)"
        # The served command outlives its caller until the hang-up has settled its run.
        wait_for(lambda: case.run_record(run_id)["state"] != "running", timeout=120, what="the hung-up run to settle")
    run = case.run_record(run_id)
    assert run["state"] == "cancelled"
    assert expected in run["details"]["errors"]
    assert saved_commit(git_repo, run["branch"]) == "stopped with SIGTERM\n"
    assert case.containers() == []
    assert worktree_paths(git_repo) == [str(git_repo)]


def test_a_served_command_killed_by_a_signal_kills_its_caller_with_it(
    case: Case, service: Service, git_repo: Path
) -> None:
    service.start()
    task = case.create_task(git_repo, "Killed while served")
    assert SCRIPT is not None
    done = subprocess.run(
        [SCRIPT, "--root", str(case.root), "run", task, "--network", "none", "--", "true"],
        env=service.env(LAUNCHER_TEST_FAULTS="kill@after:claim"),
        capture_output=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == -signal.SIGKILL, "as a launcher killed in its own process would be"
    assert served_pid(done.stderr.decode()) is not None
    case.ok("gc")
    (run,) = [r for r in case.runs() if r["task_id"] == task]
    assert run["state"] == "lost"
    assert case.containers() == []

"""`launcher wait RUN…`: blocks until the runs have ended, exits as `launcher run` would for them."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeWorld
from helpers import CliResult, clean_env, ensure_agent_image, invoke, release_root, run_cli

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.core.transitions import RunState
from launcher.models import NewRun, utcnow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def add_run(world: FakeWorld, state: RunState, exit_code: int | None = None) -> str:
    run = world.store.create_run(
        NewRun(task_id=world.new_task(), image=None, owner=None, worktrees_dir=str(world.root / "wt"))
    )
    live = state in {RunState.CREATED, RunState.RUNNING}
    world.store.update_run(run.id, state=state, ended_at=None if live else utcnow(), exit_code=exit_code)
    return run.id


def wait(world: FakeWorld, *args: str) -> CliResult:
    return invoke(["--root", str(world.root), "wait", *args])


def test_ended_runs_print_their_state_and_the_first_failure_sets_the_exit(world: FakeWorld) -> None:
    ok = add_run(world, RunState.EXITED, 0)
    failed = add_run(world, RunState.FAILED, 3)
    cancelled = add_run(world, RunState.CANCELLED)

    assert wait(world, ok).exit_code == 0
    result = wait(world, ok, failed, cancelled)

    assert result.exit_code == 10, result.stderr  # failed's, the first non-zero in the order given
    assert result.stdout.splitlines() == [f"{ok} exited 0", f"{failed} failed 3", f"{cancelled} cancelled"]
    assert wait(world, cancelled, failed).exit_code == 12


def test_it_blocks_until_a_live_run_ends(world: FakeWorld) -> None:
    live = add_run(world, RunState.RUNNING)
    started = threading.Event()

    def end_it() -> None:
        started.wait(10)
        # The run's owner records the end from another process: a connection of its own.
        owner = SqliteCoordinator(world.root / ".launcher" / "state.db")
        try:
            owner.update_run(live, state=RunState.EXITED, ended_at=utcnow(), exit_code=0)
        finally:
            owner.close()

    ender = threading.Thread(target=end_it)
    ender.start()
    started.set()
    result = wait(world, "--timeout", "30", "--json", live)
    ender.join()

    assert result.exit_code == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert (record["id"], record["state"], record["exit_code"]) == (live, "exited", 0)


def test_timeout_reports_the_runs_still_live(world: FakeWorld) -> None:
    done = add_run(world, RunState.EXITED, 0)
    live = add_run(world, RunState.RUNNING)

    result = wait(world, "--timeout", "0.3", done, live)

    assert result.exit_code == 1
    assert result.stdout.splitlines() == [f"{done} exited 0", f"{live} running"]
    assert "1 run(s) still live after 0.3s" in result.stderr


def test_an_unknown_run_is_not_found_before_waiting(world: FakeWorld) -> None:
    live = add_run(world, RunState.RUNNING)

    result = wait(world, live, "nope-1.1")

    assert result.exit_code == 5, (result.stdout, result.stderr)
    assert result.stdout == ""


# -- against real runs (Docker, real git) ------------------------------------------------------


@pytest.mark.docker
@pytest.mark.slow
def test_wait_and_follow_two_live_real_runs(git_repo: Path, case_root: Path) -> None:
    ensure_agent_image()
    root = case_root.resolve()
    env = clean_env()

    def cli(*args: str) -> CliResult:
        return run_cli(["--root", str(root), *args], env=env, timeout=240)

    follower: subprocess.Popen[str] | None = None
    try:
        ids = []
        for name, script in (("a", "echo a-start; sleep 3; echo a-end"), ("b", "echo b-start; sleep 4; exit 4")):
            started = cli(
                "run",
                "-d",
                "--repo",
                str(git_repo),
                "--title",
                f"Live {name}",
                "--network",
                "none",
                "--",
                "sh",
                "-c",
                script,
            )
            assert started.exit_code == 0, started.stderr
            ids.append(started.stdout.strip())
        first, second = ids
        follower = subprocess.Popen(
            [sys.executable, "-m", "launcher", "--root", str(root), "logs", "-f", first, second],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )

        waited = cli("wait", "--timeout", "180", first, second)

        assert waited.exit_code == 10, (waited.stdout, waited.stderr)
        assert waited.stdout.splitlines() == [f"{first} exited 0", f"{second} failed 4"]
        out, err = follower.communicate(timeout=60)  # it ends by itself once both runs have ended
        assert follower.returncode == 0, err
        width = max(len(first), len(second))
        got = out.splitlines()
        assert [line for line in got if line.startswith(first)] == [
            f"{first.ljust(width)} | a-start",
            f"{first.ljust(width)} | a-end",
        ]
        assert [line for line in got if line.startswith(second)] == [f"{second.ljust(width)} | b-start"]
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait(timeout=30)
        leftovers = release_root(root)
    assert not leftovers, leftovers

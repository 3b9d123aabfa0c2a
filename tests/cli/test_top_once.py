"""`launcher top` off a terminal: one plain table (or --json) and exit; no engine needed.

Run records are made directly in a case root's real coordinator and their logs written where a
run writes them; the CLI runs in-process (its stdout is no terminal).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeWorld
from helpers import CliResult, invoke

from launcher.cli.app_context import Application
from launcher.core.transitions import RunState
from launcher.models import NewRun, utcnow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def add_run(world: FakeWorld, state: RunState, log: bytes, **details: object) -> str:
    run = world.store.create_run(
        NewRun(task_id=world.new_task(), image=None, owner=None, worktrees_dir=str(world.root / "wt"))
    )
    live = state in {RunState.CREATED, RunState.RUNNING}
    world.store.update_run(run.id, state=state, ended_at=None if live else utcnow(), details=details)
    app = Application(str(world.root), None)
    try:
        path = app.runs.log_path(world.store.get_run(run.id))
    finally:
        app.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(log)
    return run.id


def top(world: FakeWorld, *args: str) -> CliResult:
    return invoke(["--root", str(world.root), "top", *args])


def test_off_a_terminal_top_prints_one_plain_table_of_the_live_runs(world: FakeWorld) -> None:
    live = add_run(world, RunState.RUNNING, b"working\n\x1b[2J[bold]sneaky[/bold]\r\n")
    ended = add_run(world, RunState.EXITED, b"bye\n", egress={"denied_decisions": 2})

    shown = top(world)

    assert shown.exit_code == 0, shown.stderr
    header, *lines = shown.stdout.splitlines()
    assert header.split() == ["RUN", "TASK", "STATE", "AGE", "CPU", "MEM", "COMMITS", "DENIED", "LAST"]
    assert [line.split()[0] for line in lines] == [live]  # ended runs only with --all
    # The agent's escape sequence is shown as text, and rich markup is never read in it.
    assert lines[0].endswith("^[[2J[bold]sneaky[/bold]")
    assert "\x1b" not in shown.stdout
    everything = top(world, "--all").stdout.splitlines()
    assert [line.split()[0] for line in everything[1:]] == [live, ended]
    assert everything[2].split()[2:] == ["exited", everything[2].split()[3], "-", "-", "-", "2", "bye"]


def test_json_is_the_rows_values(world: FakeWorld) -> None:
    live = add_run(world, RunState.RUNNING, b"one\ntwo\n")

    rows = json.loads(top(world, "--json").stdout)

    assert [(r["id"], r["state"], r["live"], r["last_line"], r["cpu_percent"]) for r in rows] == [
        (live, "running", True, "two", None)
    ]
    assert top(world, "--interval", "0").exit_code == 2
    assert top(world, "--all", "--once").exit_code == 0


def test_no_runs_says_so(world: FakeWorld) -> None:
    assert top(world).stdout.strip() == "no live runs (see --all)"
    assert top(world, "--json").stdout.strip() == "[]"

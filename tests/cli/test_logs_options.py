"""`launcher logs`: --tail, several runs with prefixes, --json, and following several at once.

Run records are made directly in a case root's real coordinator and their logs written where a
run writes them; the CLI runs in-process through its real entry point.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeWorld
from helpers import CliResult, invoke

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.cli.app_context import Application
from launcher.core.run import lifecycle
from launcher.core.transitions import RunState
from launcher.models import NewRun, utcnow


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def log_file(world: FakeWorld, run_id: str) -> Path:
    app = Application(str(world.root), None)
    try:
        return app.runs.log_path(world.store.get_run(run_id))
    finally:
        app.close()


def add_run(world: FakeWorld, log: bytes | None, *, state: RunState = RunState.EXITED) -> str:
    run = world.store.create_run(
        NewRun(task_id=world.new_task(), image=None, owner=None, worktrees_dir=str(world.root / "wt"))
    )
    live = state in {RunState.CREATED, RunState.RUNNING}
    world.store.update_run(run.id, state=state, ended_at=None if live else utcnow(), exit_code=None if live else 0)
    if log is not None:
        path = log_file(world, run.id)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(log)
    return run.id


def logs(world: FakeWorld, *args: str) -> CliResult:
    return invoke(["--root", str(world.root), "logs", *args])


def test_tail_keeps_the_last_lines(world: FakeWorld) -> None:
    run_id = add_run(world, b"one\ntwo\nthree\nfour")

    assert logs(world, run_id).stdout == "one\ntwo\nthree\nfour"
    assert logs(world, "--tail", "2", run_id).stdout == "three\nfour"
    assert logs(world, "-n", "10", run_id).stdout == "one\ntwo\nthree\nfour"
    assert logs(world, "--tail", "0", run_id).stdout == ""
    assert logs(world, "--tail", "-1", run_id).exit_code == 2


def test_last_lines_counts_a_line_without_newline() -> None:
    assert lifecycle.last_lines(b"a\nb\nc\n", 2) == b"b\nc\n"
    assert lifecycle.last_lines(b"a\nb\nc", 1) == b"c"
    assert lifecycle.last_lines(b"a\nb\n", 5) == b"a\nb\n"
    assert lifecycle.last_lines(b"", 3) == b""


def test_several_runs_print_with_prefixes_and_as_json(world: FakeWorld) -> None:
    first = add_run(world, b"hello\nworld\n")
    second = add_run(world, b"bye\xff\nno newline")

    result = logs(world, first, second)

    assert result.exit_code == 0, result.stderr
    width = max(len(first), len(second))
    assert result.stdout.splitlines() == [
        f"{first.ljust(width)} | hello",
        f"{first.ljust(width)} | world",
        f"{second.ljust(width)} | bye\ufffd",
        f"{second.ljust(width)} | no newline",
    ]
    lines = [json.loads(line) for line in logs(world, "--json", "--tail", "1", first, second).stdout.splitlines()]
    assert lines == [{"run": first, "line": "world"}, {"run": second, "line": "no newline"}]
    assert [json.loads(x)["line"] for x in logs(world, "--json", first).stdout.splitlines()] == ["hello", "world"]


def test_an_ended_run_without_a_log_is_not_found(world: FakeWorld) -> None:
    present = add_run(world, b"x\n")
    missing = add_run(world, None)

    result = logs(world, present, missing)

    assert result.exit_code == 5, (result.stdout, result.stderr)
    assert f"run {missing} has no log" in result.stderr


def test_follow_reads_several_live_runs_until_each_ends(world: FakeWorld) -> None:
    quiet = add_run(world, b"", state=RunState.RUNNING)
    chatty = add_run(world, b"start\n", state=RunState.RUNNING)
    chunks = lifecycle.read_logs(world.deps, [quiet, chatty], egress=False, follow=True, tail=None)
    seen: list[tuple[str, bytes]] = [next(chunks)]
    assert seen == [(chatty, b"start\n")]

    # A quiet run does not hold up the other: new output of `chatty` arrives while `quiet` says nothing.
    with open(log_file(world, chatty), "ab") as handle:
        handle.write(b"more\n")
    seen.append(next(chunks))
    assert seen[-1] == (chatty, b"more\n")

    def finish() -> None:
        with open(log_file(world, quiet), "ab") as handle:
            handle.write(b"last words\n")
        # Another process records the end, as a run's owner does: a connection of its own.
        owner = SqliteCoordinator(world.root / ".launcher" / "state.db")
        try:
            for run_id in (quiet, chatty):
                owner.update_run(run_id, state=RunState.EXITED, ended_at=utcnow(), exit_code=0)
        finally:
            owner.close()

    ender = threading.Thread(target=finish)
    ender.start()
    rest = list(chunks)  # ends once both runs have ended
    ender.join()
    assert rest == [(quiet, b"last words\n")]

"""Status changes under contention: compare-and-set, so exactly one of many racers wins.

case's task-status.sh read the status, checked it, then wrote it back: two agents could both
"win". Here 16 processes make the same move from the same expected state at the same moment;
one succeeds, the other 15 lose with exit code 3 and a message naming the state they met.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from race_harness import race
from race_worker import task_service

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.core.tasks import RepoRef
from launcher.core.transitions import TASK_TRANSITIONS, TaskStatus
from launcher.errors import ExitCode
from launcher.settings import Layout

WORKERS = 16


def make_task(root: Path, *, walk: tuple[str, ...] = ()) -> str:
    tasks = task_service(root)
    with tasks.store:
        task = tasks.create(RepoRef(name="demo", path=None), "Contended task")
        for status in walk:
            tasks.set_status(task.id, status)
        return task.id


def moves(root: Path, task_id: str) -> list[tuple[str | None, str]]:
    with SqliteCoordinator(Layout(root).state_db) as store:
        return [(h.from_status.value if h.from_status else None, h.to_status.value) for h in store.history(task_id)]


def progress_log_moves(root: Path, task_id: str) -> list[str]:
    md = (Layout(root).tasks_dir / "active" / f"{task_id}.md").read_text(encoding="utf-8")
    return re.findall(r"^Status (\S+ → \S+)", md, flags=re.MULTILINE)


@pytest.mark.slow
def test_sixteen_cli_processes_race_the_same_set_status(tmp_path: Path) -> None:
    """16 `python -m launcher task set-status ID implementing --from active`, released together."""
    root = tmp_path / "case"
    root.mkdir()
    task_id = make_task(root)
    argv = ["--root", str(root), "task", "set-status", task_id, "implementing", "--from", "active"]
    outcomes = race(tmp_path / "race", [("exec-cli", {"argv": argv})] * WORKERS, deadline_s=90)

    winners = [o for o in outcomes if o.returncode == 0]
    losers = [o for o in outcomes if o.returncode != 0]
    assert len(winners) == 1, [(o.returncode, o.stderr[-500:]) for o in outcomes]
    assert winners[0].stdout.strip() == f"{task_id}: implementing"
    for loser in losers:
        assert loser.returncode == ExitCode.CONFLICT, loser.stderr[-2000:]
        assert f"task {task_id} is implementing, not active" in loser.stderr
        assert "Traceback" not in loser.stderr
    assert moves(root, task_id) == [(None, "active"), ("active", "implementing")]
    assert progress_log_moves(root, task_id) == ["active → implementing"]


@pytest.mark.slow
def test_sixteen_api_processes_race_the_same_set_status(tmp_path: Path) -> None:
    """The same race through TaskService.set_status, with the contenders' imports warmed up."""
    root = tmp_path / "case"
    root.mkdir()
    task_id = make_task(root)
    args = {"root": str(root), "ref": task_id, "target": "implementing", "expected": "active"}
    reports = [o.report for o in race(tmp_path / "race", [("set-status-api", args)] * WORKERS, deadline_s=90)]

    assert sum(r["ok"] for r in reports) == 1, reports
    for report in reports:
        if not report["ok"]:
            assert report["exit_code"] == ExitCode.CONFLICT
            assert "is implementing, not active" in report["message"]
    assert moves(root, task_id) == [(None, "active"), ("active", "implementing")]
    assert progress_log_moves(root, task_id) == ["active → implementing"]


@pytest.mark.slow
def test_racers_wanting_different_targets_still_leave_one_winner(tmp_path: Path) -> None:
    """From `verifying`, 16 racers each want one of its legal targets: one move, the rest lose
    naming the state the winner chose."""
    root = tmp_path / "case"
    root.mkdir()
    task_id = make_task(root, walk=("implementing", "verifying"))
    targets = sorted(s.value for s in TASK_TRANSITIONS[TaskStatus.VERIFYING])
    args = [
        {"root": str(root), "ref": task_id, "target": targets[i % len(targets)], "expected": "verifying"}
        for i in range(WORKERS)
    ]
    reports = [o.report for o in race(tmp_path / "race", [("set-status-api", a) for a in args], deadline_s=90)]

    won = [r["status"] for r in reports if r["ok"]]
    assert len(won) == 1, reports
    for report in reports:
        if not report["ok"]:
            assert report["exit_code"] == ExitCode.CONFLICT
            assert f"is {won[0]}, not verifying" in report["message"]
    assert moves(root, task_id)[-1] == ("verifying", won[0])
    assert len(moves(root, task_id)) == 4

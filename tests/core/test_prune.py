"""Pruning old runs' records: by age, by total size, never a record that holds work kept nowhere else."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core.gc import GcReport
from launcher.core.prune import PruneRules, prune_records
from launcher.core.transitions import RunState
from launcher.core.units import parse_duration, parse_size
from launcher.errors import InvalidInputError
from launcher.models import NewRun, RunOwner, RunRecord, utcnow

MB = 1024 * 1024


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def _ended(world: FakeWorld, state: RunState, size: int, **details: object) -> RunRecord:
    run = world.store.create_run(
        NewRun(task_id=world.new_task(), image=None, owner=RunOwner(host="h", pid=1), worktrees_dir=str(world.root))
    )
    run = world.store.update_run(run.id, state=state, ended_at=utcnow(), details=details)
    record = world.deps.paths(run).record
    record.mkdir(parents=True)
    (record / "run.log").write_bytes(b"x" * size)
    return run


def _pruned(world: FakeWorld, rules: PruneRules, *, now: float, dry_run: bool = False) -> list[str]:
    report = GcReport(dry_run=dry_run)
    prune_records(world.deps, report, rules, now=now)
    assert report.errors == []
    return sorted(a.reason.split()[0] for a in report.actions)


def test_records_older_than_the_limit_are_pruned_and_the_run_says_so(world: FakeWorld) -> None:
    old = _ended(world, RunState.EXITED, MB)
    assert _pruned(world, PruneRules(older_than=3600), now=time.time() + 7200) == [old.id]
    assert not world.deps.paths(old).record.exists()
    assert world.store.get_run(old.id).details.pruned is True
    assert _pruned(world, PruneRules(older_than=3600), now=time.time() + 7200) == [], "pruned once"


def test_young_records_stay(world: FakeWorld) -> None:
    _ended(world, RunState.FAILED, MB)
    assert _pruned(world, PruneRules(older_than=3600), now=time.time()) == []


def test_a_size_budget_prunes_the_oldest_first_until_the_rest_fits(world: FakeWorld) -> None:
    first, second, third = (_ended(world, RunState.EXITED, 2 * MB) for _ in range(3))
    assert _pruned(world, PruneRules(max_bytes=3 * MB), now=time.time()) == sorted([first.id, second.id])
    assert world.deps.paths(third).record.exists()


def test_a_record_that_holds_work_kept_nowhere_else_is_never_pruned(world: FakeWorld) -> None:
    _ended(world, RunState.UNHARVESTED, MB, harvest={"error": "bundle over the cap", "bundle": "/x"})
    _ended(world, RunState.EXCEEDED, MB, harvest={"error": "no room", "kept_worktree": "/w"})
    harvested = _ended(world, RunState.EXITED, MB, harvest={"tip": "a" * 40, "bundle": "/r/run.bundle"})
    assert _pruned(world, PruneRules(older_than=0), now=time.time() + 10) == [harvested.id]


def test_a_dry_run_prunes_nothing(world: FakeWorld) -> None:
    old = _ended(world, RunState.EXITED, MB)
    assert _pruned(world, PruneRules(older_than=0), now=time.time() + 10, dry_run=True) == [old.id]
    assert world.deps.paths(old).record.exists()
    assert world.store.get_run(old.id).details.pruned is None


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("30m", 1800), ("12h", 43200), ("7d", 604800)])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, what="--older-than") == seconds


@pytest.mark.parametrize(("text", "size"), [("512", 512), ("1k", 1024), ("500m", 500 * MB), ("10G", 10 * 1024**3)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text, what="--max-records") == size


@pytest.mark.parametrize("text", ["", "7x", "-1d", "ten"])
def test_nonsense_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_duration(text, what="--older-than")
    with pytest.raises(InvalidInputError):
        parse_size(text, what="--max-records")

"""Which run a disk bound stops: the one past its own budget, or at the reserve the biggest one."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core.run.disk import DiskWatch, check_room, reserve
from launcher.core.transitions import RunState
from launcher.errors import HostStorageError
from launcher.models import NewRun, RunOwner, RunRecord

MB = 1024 * 1024


@pytest.fixture
def world(tmp_path: Path) -> FakeWorld:
    return FakeWorld.make(tmp_path, disk=4 * MB, disk_reserve=10 * MB)


def _live(world: FakeWorld, size: int) -> tuple[RunRecord, DiskWatch]:
    run = world.store.create_run(
        NewRun(
            task_id=world.new_task(f"writes {size}"),
            image=None,
            owner=RunOwner(host="h", pid=1),
            worktrees_dir=str(world.deps.worktrees_dir),
        )
    )
    run = world.store.update_run(run.id, state=RunState.RUNNING)
    paths = world.deps.paths(run)
    paths.worktree.mkdir(parents=True)
    (paths.worktree / "data").write_bytes(b"x" * size)
    return run, DiskWatch(world.deps, run.id, paths, "c" * 64)


def test_a_run_past_its_own_budget_is_stopped_whatever_the_disk_has(world: FakeWorld) -> None:
    _, watch = _live(world, 5 * MB)
    exceeded = watch.look()
    assert exceeded is not None
    assert (exceeded.bound, exceeded.limit) == ("disk", 4 * MB)
    assert exceeded.used >= 5 * MB


def test_under_budget_with_room_to_spare_nothing_is_stopped(world: FakeWorld) -> None:
    _, watch = _live(world, MB)
    assert watch.look() is None


def test_at_the_reserve_only_the_biggest_run_is_stopped(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    small, small_watch = _live(world, MB)
    big, big_watch = _live(world, 3 * MB)
    assert small_watch.look() is None
    assert big_watch.look() is None, "both have looked (and said what they hold) before the disk got short"
    monkeypatch.setattr(world.workspace, "free_space", lambda _path: 5 * MB)  # under the 10 MB reserve
    assert small_watch.look() is None, "the small run waits: the big one is to blame"
    exceeded = big_watch.look()
    assert exceeded is not None
    assert exceeded.bound == "reserve"
    assert world.store.get_run(big.id).details.disk_used == exceeded.used, "each look publishes its use"
    assert world.store.get_run(small.id).details.disk_used is not None


def test_a_run_is_refused_on_a_disk_already_at_its_reserve(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(world.workspace, "free_space", lambda _path: MB)
    with pytest.raises(HostStorageError, match="disk_reserve"):
        check_room(world.deps)


def test_the_default_reserve_is_at_most_a_twentieth_of_a_small_disk(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 64 MB tmpfs root is not refused by the 1 GiB default; a reserve set in the file stands."""
    default = FakeWorld.make(tmp_path / "default")
    monkeypatch.setattr(default.workspace, "disk_size", lambda _path: 64 * MB)
    monkeypatch.setattr(default.workspace, "free_space", lambda _path: 60 * MB)
    assert reserve(default.deps) == 64 * MB // 20
    check_room(default.deps)

    explicit = FakeWorld.make(tmp_path / "explicit", disk_reserve=62 * MB)
    monkeypatch.setattr(explicit.workspace, "disk_size", lambda _path: 64 * MB)
    monkeypatch.setattr(explicit.workspace, "free_space", lambda _path: 60 * MB)
    assert reserve(explicit.deps) == 62 * MB
    with pytest.raises(HostStorageError, match="disk_reserve"):
        check_room(explicit.deps)

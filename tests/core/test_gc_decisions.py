"""What `launcher gc` decides to settle and remove, on the fakes (no Docker, no git)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core import labels
from launcher.core.gc import GarbageCollector
from launcher.core.transitions import RunState
from launcher.models import NewRun, RunOwner, RunRecord, SandboxSpec


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def _live_run(world: FakeWorld, owner: str) -> RunRecord:
    run = world.store.create_run(
        NewRun(
            task_id=world.new_task(f"task of {owner}"),
            image="launcher/agent-base:latest",
            owner=RunOwner(host=owner, pid=1),
            worktrees_dir=str(world.deps.worktrees_dir),
        )
    )
    return world.store.update_run(run.id, state=RunState.RUNNING, details={"repo": str(world.repo.toplevel)})


def _container(world: FakeWorld, run_id: str, kind: labels.Kind = "run") -> str:
    spec = SandboxSpec(
        image="i",
        name=f"launcher-{run_id}",
        command=[],
        entrypoint=[],
        env={},
        user="1:1",
        workdir="/",
        labels=labels.for_run(world.root, run_id, "t", kind=kind),
        mounts=[],
        writable_tmp=[],
        network="none",
        memory="1g",
        cpus=1.0,
        pids_limit=10,
    )
    return world.sandbox.create(spec)


def _made(world: FakeWorld, path: Path) -> Path:
    """A folder as launcher makes one: marked as it is made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with world.deps.marks.making(path):
        path.mkdir()
    return path


def _alive_unless_dead(owner: RunOwner | None) -> bool | None:
    return owner is not None and owner.host != "dead"


def _kinds(report: object) -> list[tuple[str, str]]:
    return [(a.kind, a.target) for a in report.actions]  # type: ignore[attr-defined]


def test_a_run_whose_launcher_died_is_settled_lost_and_its_container_removed(world: FakeWorld) -> None:
    run = _live_run(world, "dead")
    _container(world, run.id)
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert ("settle-run", run.id) in _kinds(report)
    assert world.store.get_run(run.id).state is RunState.LOST
    assert world.sandbox.containers == {}
    assert report.errors == []


def test_a_run_whose_launcher_lives_is_left_alone(world: FakeWorld) -> None:
    run = _live_run(world, "alive")
    container = _container(world, run.id)
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert report.actions == []
    assert world.store.get_run(run.id).state is RunState.RUNNING
    assert container in world.sandbox.containers


def test_an_owner_on_another_host_is_never_declared_dead(world: FakeWorld) -> None:
    run = _live_run(world, "elsewhere")
    GarbageCollector(world.deps, lambda _owner: None).collect(dry_run=False)
    assert world.store.get_run(run.id).state is RunState.RUNNING


def test_a_container_of_an_unknown_run_is_removed(world: FakeWorld) -> None:
    stray = _container(world, "nobody-1.1")
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert any(kind == "remove-container" for kind, _ in _kinds(report))
    assert stray not in world.sandbox.containers


def test_a_dry_run_reports_and_changes_nothing(world: FakeWorld) -> None:
    run = _live_run(world, "dead")
    container = _container(world, run.id)
    _made(world, world.deps.worktrees_dir / "stray")
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=True)
    kinds = {kind for kind, _ in _kinds(report)}
    assert {"settle-run", "remove-container", "remove-worktree"} <= kinds
    assert all(not a.done for a in report.actions)
    assert world.store.get_run(run.id).state is RunState.RUNNING
    assert container in world.sandbox.containers
    assert (world.deps.worktrees_dir / "stray").is_dir()


def test_folders_are_removed_unless_their_run_lives_or_kept_its_worktree(world: FakeWorld) -> None:
    live = _live_run(world, "alive")
    kept = _live_run(world, "alive")
    world.store.update_run(kept.id, state=RunState.EXITED, details={"keep_worktree": True})
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.FAILED)
    for run_id in (live.id, kept.id, done.id, "nobody-9.1"):
        _made(world, world.deps.worktrees_dir / run_id)
    GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    left = sorted(p.name for p in world.deps.worktrees_dir.iterdir())
    assert left == sorted([live.id, kept.id]), "what gc took out of a repository, it deleted"


def test_half_deleted_worktrees_of_ended_runs_are_emptied_and_a_live_ones_kept(world: FakeWorld) -> None:
    live = _live_run(world, "alive")
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.EXITED)
    for holder in (live.id, done.id, "p0123456789"):
        # A worktree launcher made, moved aside by a retirement that was killed halfway.
        made = _made(world, world.deps.worktrees_dir / holder)
        (made / "src").mkdir()
        made.rename(world.deps.worktrees_dir / f".trash-{holder}-0badcafe")
    GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    left = sorted(p.name for p in world.deps.worktrees_dir.iterdir() if p.name.startswith(".trash-"))
    assert left == [f".trash-{live.id}-0badcafe"]


# -- only folders launcher made and marked ---------------------------------------------------


def _plant(world: FakeWorld, tmp_path: Path, done_id: str) -> dict[str, Path]:
    """What a user (or anything but launcher) put in the worktrees folder, named like launcher's."""
    top = world.deps.worktrees_dir
    top.mkdir(parents=True, exist_ok=True)
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "precious").mkdir(parents=True)
    (elsewhere / "precious" / "data.txt").write_text("keep me\n")
    planted = {
        "folder": top / "planted",
        "like-a-run": top / done_id,
        "like-a-slot": top / ".pool" / "p0123456789",
        "like-trash": top / f".trash-{done_id}-0badcafe",
        "sandbox": world.deps.state_dir / "sandboxes" / done_id,
    }
    for path in planted.values():
        (path / "inside").mkdir(parents=True)
        (path / "inside" / "file.txt").write_text("not launcher's\n")
    planted["symlink"] = top / "link"
    planted["symlink"].symlink_to(elsewhere, target_is_directory=True)
    planted["elsewhere"] = elsewhere
    return planted


def test_gc_never_lists_or_removes_a_folder_launcher_did_not_make(world: FakeWorld, tmp_path: Path) -> None:
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.FAILED)
    planted = _plant(world, tmp_path, done.id)
    dry = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=True)
    real = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    for report in (dry, real):
        named = " ".join(a.target for a in report.actions)
        assert not [p for p in planted.values() if str(p) in named], report.actions
    for path in planted.values():
        assert path.exists(), f"gc removed {path}"
    assert (planted["elsewhere"] / "precious" / "data.txt").read_text() == "keep me\n"
    assert planted["symlink"].is_symlink()
    assert (planted["folder"] / "inside" / "file.txt").is_file()


def test_a_folder_put_where_launcher_made_one_is_not_launchers(world: FakeWorld) -> None:
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.EXITED)
    path = _made(world, world.deps.worktrees_dir / done.id)
    path.rmdir()
    path.mkdir()  # same path, another folder (another inode): somebody else's now
    (path / "theirs.txt").write_text("x")
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert report.actions == []
    assert (path / "theirs.txt").is_file()
    # ... and the mark, naming a folder that is gone, is forgotten without a word.
    assert world.deps.marks.marked() == []


def test_a_marked_folder_replaced_by_a_symlink_is_never_followed(world: FakeWorld, tmp_path: Path) -> None:
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.EXITED)
    path = _made(world, world.deps.worktrees_dir / done.id)
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("keep")
    path.rmdir()
    path.symlink_to(target, target_is_directory=True)
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert report.actions == []
    assert path.is_symlink()
    assert (target / "keep.txt").read_text() == "keep"


def test_launchers_own_strays_are_still_removed_and_their_marks_forgotten(world: FakeWorld) -> None:
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.FAILED)
    worktree = _made(world, world.deps.worktrees_dir / done.id)
    (worktree / "work.txt").write_text("the agent's")
    sandbox = _made(world, world.deps.state_dir / "sandboxes" / done.id)
    slot = _made(world, world.deps.worktrees_dir / ".pool" / "p0123456789")
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert sorted(a.kind for a in report.actions) == ["remove-sandbox", "remove-worktree", "remove-worktree"]
    assert report.errors == []
    assert not worktree.exists()
    assert not sandbox.exists()
    assert not slot.exists()
    assert world.deps.marks.marked() == []
    assert GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False).actions == []


def _killed_while_making(marks_dir: Path, path: Path) -> None:
    """A launcher killed right after its mkdir, before the folder's mark was completed."""
    script = (
        "import os, sys; from pathlib import Path; from launcher.adapters.folder_marks import FolderMarks\n"
        "path = Path(sys.argv[2])\n"
        "with FolderMarks(Path(sys.argv[1])).making(path):\n"
        "    path.mkdir()\n"
        "    os._exit(9)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(marks_dir), str(path)], check=False, timeout=60)
    assert done.returncode == 9


def test_a_folder_launcher_was_killed_making_is_removed_only_while_empty(world: FakeWorld) -> None:
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.FAILED)
    other = _live_run(world, "alive")
    world.store.update_run(other.id, state=RunState.FAILED)
    empty, filled = world.deps.worktrees_dir / done.id, world.deps.worktrees_dir / other.id
    empty.parent.mkdir(parents=True)
    for path in (empty, filled):
        _killed_while_making(world.deps.state_dir / "marks", path)
    (filled / "somebody.txt").write_text("x")
    GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert not empty.exists()
    assert (filled / "somebody.txt").is_file(), "an unproven folder that is not empty stays"


def test_a_run_being_taken_apart_is_left_to_its_teardown(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    """Settled, its teardown lock held (its `launcher run`'s child is removing its things): gc
    waits a little, then leaves it alone; once the lock is let go, gc removes what is left."""
    from launcher.adapters.teardown_locks import TeardownLocks

    monkeypatch.setattr("launcher.core.gc.TEARDOWN_WAIT_S", 0.2)
    world.deps.teardown_locks = TeardownLocks(world.deps.state_dir / "teardown")
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.EXITED)
    _container(world, done.id)
    sandbox = _made(world, world.deps.state_dir / "sandboxes" / done.id)
    hold = world.deps.teardown_locks.hold(done.id)
    try:
        report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
        assert report.actions == [], "nothing of a run being taken apart is gc's"
        assert len(world.sandbox.containers) == 1
        assert sandbox.is_dir()
    finally:
        hold.release()
    report = GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    assert sorted(a.kind for a in report.actions) == ["remove-container", "remove-sandbox"]
    assert world.sandbox.containers == {}
    assert not sandbox.exists()

"""What `launcher gc` decides to settle and remove, on the fakes (no Docker, no git)."""

from __future__ import annotations

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
    (world.deps.worktrees_dir / "stray").mkdir(parents=True)
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
        (world.deps.worktrees_dir / run_id).mkdir(parents=True)
    GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    left = sorted(p.name for p in world.deps.worktrees_dir.iterdir())
    assert left == sorted([live.id, kept.id]), "what gc took out of a repository, it deleted"


def test_half_deleted_worktrees_of_ended_runs_are_emptied_and_a_live_ones_kept(world: FakeWorld) -> None:
    live = _live_run(world, "alive")
    done = _live_run(world, "alive")
    world.store.update_run(done.id, state=RunState.EXITED)
    for holder in (live.id, done.id, "p0123456789"):
        (world.deps.worktrees_dir / f".trash-{holder}-0badcafe" / "src").mkdir(parents=True)
    GarbageCollector(world.deps, _alive_unless_dead).collect(dry_run=False)
    left = sorted(p.name for p in world.deps.worktrees_dir.iterdir() if p.name.startswith(".trash-"))
    assert left == [f".trash-{live.id}-0badcafe"]

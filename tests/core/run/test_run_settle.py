"""Settle collects every problem instead of stopping at the first, and never overwrites a verdict."""

from __future__ import annotations

import pytest
from fakes import BASE, FakeWorld, commit_bundle

from launcher.core.run.settle import settle_record
from launcher.core.transitions import RunState
from launcher.errors import DockerError, GitError
from launcher.models import NewRun, RunOwner

TIP = "d" * 40


def test_every_failing_step_is_recorded_and_the_later_steps_still_run(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP), (0, b""))[1]
    world.sandbox.fail["remove"] = DockerError("cannot remove container: 500")
    world.repo.fail["prune_worktrees"] = GitError("worktree prune failed")
    settled = world.run_task()
    assert [e.split(":")[0] for e in settled.details.errors or []] == ["cleanup"]
    # The container goes after the ending is recorded (the run's teardown): its failure is added.
    run = world.store.get_run(settled.id)
    errors = run.details.errors or []
    assert [e.split(":")[0] for e in errors] == ["cleanup", "container cleanup"], errors
    assert run.details.harvest is not None
    assert run.details.harvest.tip == TIP
    assert run.details.agent_result is not None, "the steps after a failed cleanup step ran"
    assert not world.deps.paths(run).sandbox.exists(), "the sandbox is removed although the prune failed"
    assert run.state is RunState.EXITED


def test_a_harvest_that_fails_keeps_everything_and_ends_unharvested(world: FakeWorld) -> None:
    """Until 1679cc1 a failed harvest still removed the folders and recorded `exited`."""
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP), (0, b""))[1]
    world.sandbox.fail["remove"] = DockerError("cannot remove container: 500")
    world.repo.fail["verify_bundle"] = GitError("bundle verify failed")
    run = world.store.get_run(world.run_task().id)
    errors = run.details.errors or []
    assert [e.split(":")[0] for e in errors] == ["harvest", "kept", "recover", "container cleanup"], errors
    assert run.state is RunState.UNHARVESTED
    assert run.exit_code == 0, "the agent's own exit code is still recorded"
    harvest = run.details.harvest
    assert harvest is not None
    assert harvest.error == "the run's bundle is corrupt: bundle verify failed"
    assert harvest.ending == "exited"
    paths = world.deps.paths(run)
    assert harvest.bundle == str(paths.harvested_bundle)
    assert paths.harvested_bundle.is_file()
    assert harvest.kept_worktree == str(paths.worktree)
    assert paths.worktree.is_dir()
    assert harvest.kept_sandbox == str(paths.record / "sandbox")
    assert (paths.record / "sandbox" / "git").is_dir()
    assert not paths.sandbox.exists()
    assert run.details.keep_worktree is True, "gc must leave the kept worktree alone"
    assert any("launcher import" in how for how in harvest.recover)
    assert run.details.agent_result is not None, "the steps after a failed harvest ran"
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE


def test_a_run_settled_by_someone_else_first_keeps_their_verdict(world: FakeWorld) -> None:
    task_id = world.new_task()
    run = world.store.create_run(
        NewRun(task_id=task_id, image=None, owner=RunOwner(host="gone", pid=1), worktrees_dir=str(world.root))
    )
    run = world.store.update_run(run.id, state=RunState.RUNNING, details={"repo": str(world.repo.toplevel)})
    world.store.update_run(run.id, expected=[RunState.RUNNING], state=RunState.CANCELLED)
    settled = settle_record(world.deps, run, "lost", "its launcher died")
    assert settled.state is RunState.CANCELLED, "the compare-and-set lost: the first verdict stands"
    assert settled.details.errors == ["its launcher died"], "what this settle learnt is still added"
    events = [(e.from_state, e.to_state) for e in world.store.run_events(run.id)]
    assert events[-1] == (RunState.RUNNING, RunState.CANCELLED), "no second end state was recorded"


@pytest.mark.parametrize("ending", ["exited", "failed", "cancelled", "lost"])
def test_settling_twice_is_harmless(world: FakeWorld, ending: str) -> None:
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP), (0, b""))[1]
    run = world.run_task()
    again = settle_record(world.deps, run, ending, None)  # type: ignore[arg-type]
    assert again.state is RunState.EXITED
    assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP

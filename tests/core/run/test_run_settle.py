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
    world.repo.fail["verify_bundle"] = GitError("bundle verify failed")
    world.repo.fail["prune_worktrees"] = GitError("worktree prune failed")
    run = world.run_task()
    errors = run.details.errors or []
    assert [e.split(":")[0] for e in errors] == ["container cleanup", "harvest", "cleanup"], errors
    assert run.details.harvest is not None
    assert run.details.harvest.error == "bundle verify failed"
    assert run.details.agent_result is not None, "the steps after a failed harvest ran"
    assert not world.deps.paths(run).sandbox.exists(), "folders are removed after a failed harvest"
    # Exit 0 with work not harvested; the record says so (issue #15 makes this its own state).
    assert run.state is RunState.EXITED


def test_a_bundle_that_does_not_descend_from_the_base_leaves_the_branch_at_the_base(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, parent="e" * 40), (0, b""))[1]
    run = world.run_task()
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE
    assert run.details.harvest is not None
    assert "does not descend from its base" in (run.details.harvest.error or "")


def test_a_bundle_carrying_more_than_head_is_refused(world: FakeWorld) -> None:
    heads = ("HEAD", "refs/heads/other")
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, heads=heads), (0, b""))[1]
    run = world.run_task()
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE
    assert "must carry HEAD only" in (run.details.harvest.error if run.details.harvest else "")


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

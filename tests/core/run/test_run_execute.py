"""How a run ends, decided from what the ports answer: exit codes, deadlines, failures on the way."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from fakes import BASE, FakeWorld, commit_bundle

from launcher.adapters import workspace as workspace_adapter
from launcher.core.run import is_infrastructure_error
from launcher.errors import (
    CapacityError,
    DockerError,
    DockerUnavailableError,
    ExitCode,
    GitError,
    GitLockContentionError,
    HostStorageError,
    ImageNotFoundError,
    InvalidInputError,
    LockTimeoutError,
    StateStoreError,
)

TIP = "c" * 40


def _nothing_left(world: FakeWorld, run_id: str) -> None:
    run = world.store.get_run(run_id)
    paths = world.deps.paths(run)
    assert world.sandbox.containers == {}, "every container of the run is removed"
    assert not paths.worktree.exists()
    assert not paths.sandbox.exists()


def test_a_clean_exit_moves_the_branch_to_the_agents_commit(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP), (0, b"did it\n"))[1]
    run = world.run_task()
    assert run.state.value == "exited"
    assert run.exit_code == 0
    assert run.details.infrastructure_failure is False
    assert run.details.harvest is not None
    assert run.details.harvest.tip == TIP
    assert [c.sha for c in run.details.harvest.commits] == [TIP]
    assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP
    assert Path(run.details.log or "").read_bytes() == b"did it\n"
    _nothing_left(world, run.id)


def test_a_non_zero_exit_is_the_agents_failure_not_the_machinerys(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, _out: (3, b"")
    run = world.run_task()
    assert (run.state.value, run.exit_code, run.details.infrastructure_failure) == ("failed", 3, False)
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE, "no bundle: the branch stays at its base"


def test_an_agent_still_running_at_its_deadline_is_killed_and_timed_out(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, _out: (None, b"")
    run = world.run_task(timeout=5)
    assert run.state.value == "timed-out"
    assert "kill" in world.sandbox.calls
    _nothing_left(world, run.id)


def test_a_container_the_engine_refuses_is_an_infrastructure_failure_and_leaves_nothing(world: FakeWorld) -> None:
    world.sandbox.fail["create"] = DockerError("500 Server Error")
    run = world.run_task()
    assert run.state.value == "failed"
    assert run.details.infrastructure_failure is True
    assert run.details.errors == ["500 Server Error"]
    _nothing_left(world, run.id)


def test_an_unexpected_exception_settles_the_run_before_it_goes_on(world: FakeWorld) -> None:
    world.workspace.fail["write_private_git_dir"] = RuntimeError("a defect")
    task_id = world.new_task()
    with pytest.raises(RuntimeError, match="a defect"):
        world.run_task(task_id)
    (run,) = world.store.list_runs(task_id=task_id)
    assert run.state.value == "failed"
    assert run.details.errors == ["internal error: RuntimeError: a defect"]
    _nothing_left(world, run.id)


def test_a_full_disk_is_a_launcher_error_with_the_stores_exit_code(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(*_args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/case/.launcher/sandboxes/x/git")

    monkeypatch.setattr(workspace_adapter, "write_private_git_dir", full)
    run = world.run_task()
    assert run.state.value == "failed"
    assert run.details.errors is not None
    assert run.details.errors[0].startswith("cannot write the run's private git dir: No space left on device")
    assert "hint: the disk under the case root is full" in run.details.errors[0]
    assert HostStorageError.exit_code == ExitCode.STATE_STORE
    _nothing_left(world, run.id)


def test_a_killed_agent_is_harvested_by_a_container_of_its_own(world: FakeWorld) -> None:
    def agent(spec, out):  # type: ignore[no-untyped-def]
        if spec.env.get("LAUNCHER_PHASE") == "harvest":
            commit_bundle(out, TIP)
            return 0, b""
        return None, b""  # runs past its deadline and is killed before bundling

    world.sandbox.agent = agent
    run = world.run_task(timeout=1)
    assert run.state.value == "timed-out"
    assert run.details.harvest is not None
    assert run.details.harvest.tip == TIP
    assert world.sandbox.calls.count("create") == 2, "the agent's container, then the harvest container"


def test_the_harvest_container_has_the_runs_layout_without_harness_or_network(world: FakeWorld) -> None:
    seen = []

    def agent(spec, out):  # type: ignore[no-untyped-def]
        seen.append(spec)
        return (0, b"") if spec.env.get("LAUNCHER_PHASE") == "harvest" else (None, b"")

    world.sandbox.agent = agent
    world.run_task(timeout=1)
    run_spec, harvest = seen
    assert harvest.network == "none"
    assert harvest.labels["launcher.kind"] == "harvest"
    assert harvest.user == run_spec.user
    harness = {m.target for m in run_spec.mounts if m.target == "/case" or m.target.startswith("/case/")}
    assert harness, "the run itself sees the harness"
    assert {m.target for m in harvest.mounts} == {m.target for m in run_spec.mounts} - harness


@pytest.mark.parametrize(
    ("error", "infrastructure"),
    [
        (DockerError("500"), True),
        (DockerUnavailableError("engine gone"), True),
        (ImageNotFoundError("no image"), False),
        (GitLockContentionError("index.lock"), True),
        (GitError("bad ref"), False),
        (LockTimeoutError("/x.lock", 60.0, "repository"), True),
        (StateStoreError("locked"), True),
        (CapacityError("no subnet"), True),
        (InvalidInputError("bad"), False),
        (HostStorageError("disk full"), False),
        (RuntimeError("defect"), False),
    ],
)
def test_which_failures_a_batch_retries(error: BaseException, infrastructure: bool) -> None:
    assert is_infrastructure_error(error) is infrastructure

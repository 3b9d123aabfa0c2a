"""What a harvest keeps, and how a run ends when it cannot complete (decisions, on the fakes).

The real thing (Docker, git, hostile bundles) is tested in tests/runs/test_run_capture.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import BASE, FakeWorld, commit_bundle

from launcher.core.run.harvest import import_bundle, run_refs
from launcher.core.transitions import RunState
from launcher.errors import BundleOverCapError, DockerError, ExitCode, HarvestIncompleteError, exit_code_of_run

TIP = "d" * 40


def test_every_ref_of_the_bundle_is_kept_under_the_runs_refs(world: FakeWorld) -> None:
    heads = ("HEAD", "refs/heads/side", "refs/tags/v1", "refs/launcher/stash/0", "refs/launcher/wip")
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, heads=heads), (0, b""))[1]
    run = world.run_task()
    ns = run_refs(run.id)
    assert run.state is RunState.EXITED
    assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP
    harvest = run.details.harvest
    assert harvest is not None
    assert harvest.refs == {f"{ns}/heads/side": TIP, f"{ns}/tags/v1": TIP, f"{ns}/stash/0": TIP, f"{ns}/wip": TIP}
    assert harvest.wip == f"{ns}/wip"
    assert f"{ns}/head" not in world.repo.refs, "HEAD's staging ref goes once the branch holds it"
    assert not world.deps.paths(run).worktree.exists(), "everything is kept, so the worktree goes"


def test_a_bundle_carrying_a_ref_no_run_makes_is_refused_and_kept(world: FakeWorld) -> None:
    heads = ("HEAD", "refs/remotes/origin/main")
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, heads=heads), (0, b""))[1]
    run = world.run_task()
    assert run.state is RunState.UNHARVESTED
    assert exit_code_of_run(run.state.value) == ExitCode.RUN_UNHARVESTED == 15
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE
    harvest = run.details.harvest
    assert harvest is not None
    assert "refs/remotes/origin/main" in (harvest.error or "")
    assert harvest.kept_worktree
    assert Path(harvest.kept_worktree).is_dir()
    assert harvest.bundle
    assert Path(harvest.bundle).is_file()


def test_a_head_off_the_base_keeps_its_refs_and_the_worktree_goes(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, parent="e" * 40), (0, b""))[1]
    run = world.run_task()
    assert run.state is RunState.UNHARVESTED
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE
    harvest = run.details.harvest
    assert harvest is not None
    assert "does not descend from its base" in (harvest.error or "")
    assert harvest.refs == {f"{run_refs(run.id)}/head": TIP}
    assert harvest.kept_worktree is None, "its content is in the repository: nothing else to keep"
    assert not world.deps.paths(run).worktree.exists()
    assert any("--branch" in how for how in harvest.recover)

    imported = import_bundle(world.deps, run.id, bundle=None, branch="rescued")
    assert world.repo.refs["refs/heads/rescued"] == TIP
    assert imported.details.harvest is not None
    assert imported.details.harvest.imported == "rescued"
    assert imported.state is RunState.UNHARVESTED, "the run's end stays recorded as it was"


def test_a_branch_moved_by_someone_else_is_left_alone(world: FakeWorld) -> None:
    other = "f" * 40

    def agent(spec: object, out: Path) -> tuple[int, bytes]:
        branch = next(ref for ref in world.repo.refs if ref.startswith("refs/heads/launcher/"))
        world.repo.refs[branch] = other
        commit_bundle(out, TIP)
        return 0, b""

    world.sandbox.agent = agent  # type: ignore[assignment]
    run = world.run_task()
    assert run.state is RunState.UNHARVESTED
    assert world.repo.refs[f"refs/heads/{run.branch}"] == other
    assert "moved by someone else" in (run.details.harvest.error or "" if run.details.harvest else "")
    with pytest.raises(HarvestIncompleteError, match="moved by someone else"):
        import_bundle(world.deps, run.id, bundle=None, branch=None)


def test_a_bundle_over_the_cap_is_kept_and_imported_once_the_cap_is_raised(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path, bundle_max=1024)
    try:

        def agent(_spec: object, out: Path) -> tuple[int, bytes]:
            commit_bundle(out, TIP)
            with (out / "run.bundle").open("a") as bundle:
                bundle.write(" " * 4096)  # still the same JSON, now over the cap
            return 0, b""

        world.sandbox.agent = agent  # type: ignore[assignment]
        run = world.run_task()
        assert run.state is RunState.UNHARVESTED
        harvest = run.details.harvest
        assert harvest is not None
        assert "over [run] bundle_max (1024)" in (harvest.error or "")
        kept = world.deps.paths(run).harvested_bundle
        assert harvest.bundle == str(kept)
        assert kept.stat().st_size > 4096
        assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE
        with pytest.raises(BundleOverCapError):
            import_bundle(world.deps, run.id, bundle=None, branch=None)
        world.deps.defaults.bundle_max = 1 << 20
        import_bundle(world.deps, run.id, bundle=None, branch=None)
        assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP
    finally:
        world.close()


def test_an_entry_that_could_not_capture_everything_keeps_the_worktree(world: FakeWorld) -> None:
    def agent(_spec: object, out: Path) -> tuple[int, bytes]:
        commit_bundle(out, TIP)
        (out / "capture").write_text('error: open("secret.txt"): Permission denied\n')
        return 0, b""

    world.sandbox.agent = agent  # type: ignore[assignment]
    run = world.run_task()
    assert run.state is RunState.UNHARVESTED
    assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP, "what could be harvested is on the branch"
    harvest = run.details.harvest
    assert harvest is not None
    assert "Permission denied" in (harvest.error or "")
    assert harvest.kept_worktree
    assert Path(harvest.kept_worktree).is_dir()


def test_a_killed_run_whose_capture_never_happened_keeps_everything(world: FakeWorld) -> None:
    def agent(_spec: object, _out: Path) -> tuple[int | None, bytes]:
        # Killed at its deadline, and the harvest container cannot be made either.
        world.sandbox.fail["create"] = DockerError("engine gone")
        return None, b""

    world.sandbox.agent = agent  # type: ignore[assignment]
    run = world.run_task(timeout=5)
    assert run.state is RunState.UNHARVESTED
    harvest = run.details.harvest
    assert harvest is not None
    assert "engine gone" in (harvest.error or "")
    assert harvest.ending == "timed-out"
    assert harvest.kept_worktree
    assert harvest.kept_sandbox
    assert Path(harvest.kept_sandbox, "git").is_dir()


def test_a_kept_worktree_is_a_fresh_checkout_with_the_uncommitted_work(world: FakeWorld) -> None:
    heads = ("HEAD", "refs/launcher/wip")
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, heads=heads), (0, b""))[1]
    run = world.run_task(keep_worktree=True)
    assert run.state is RunState.EXITED
    calls = world.repo.calls
    assert calls.index("retire_worktree") < calls.index("check_out_worktree") < calls.index("apply_tree")
    assert "chown_tree" not in world.workspace.calls[world.workspace.calls.index("remove_tree") :]
    assert world.deps.paths(run).worktree.is_dir()

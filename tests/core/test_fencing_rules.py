"""Fencing: every claim carries a token (the task's ``claims`` after it), and settle, task changes,
publish and the claim's release are compare-and-set on it.

The store's part runs on both backends (SQLite in tmp_path, and a fresh database on the session's
PostgreSQL server where its binaries are installed); the run's part on the fakes over the real
SQLite store, with a second claimer taking the task over while the fake agent runs. The same
race between real processes, Docker and git is tests/races/test_fencing_race.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import BASE, FakeWorld, commit_bundle
from pg import PgServer, pg_server

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.core import coordination
from launcher.core.ports import Coordinator
from launcher.core.run import RunRequest
from launcher.core.run import publish as publish_step
from launcher.core.run.claim_lease import process_prefix, run_lease_owner
from launcher.core.run.publish import publish_failed, publish_run
from launcher.core.run.settle import settle_record
from launcher.core.transitions import (
    LIVE_RUN_STATES,
    SUPERSEDABLE_RUN_STATES,
    TERMINAL_RUN_STATES,
    RunState,
    TaskStatus,
)
from launcher.errors import ExitCode, FencedOutError, TransitionConflictError, exit_code_of_run
from launcher.models import NewRun, NewTask, RunOwner, RunRecord
from launcher.settings import PublishSettings

__all__ = ["pg_server"]

TIP = "d" * 40
OWNER = RunOwner(host="test", pid=1)  # FakeWorld's runs are this process's
OTHER_BOX = "other-box:77:1:run"


# -- the rules, without a store ------------------------------------------------------------


def test_the_fence_is_a_compare_and_set_on_the_claim_count() -> None:
    coordination.check_fence("run demo-1.1", "demo-1-x", 3, 3, "box-a:1:1:run")
    coordination.check_fence("run demo-1.1", "demo-1-x", None, 9, None)  # --concurrent: not fenced
    with pytest.raises(FencedOutError) as out:
        coordination.check_fence("run demo-1.1", "demo-1-x", 3, 4, "box-b:2:2:run")
    assert (out.value.fence, out.value.current, out.value.holder) == (3, 4, "box-b:2:2:run")
    assert out.value.message == (
        "run demo-1.1's claim #3 on task demo-1-x was taken over: the task is at claim #4, held by box-b:2:2:run"
    )
    assert isinstance(out.value, TransitionConflictError)


def test_superseded_is_terminal_reached_from_live_states_and_lost_and_exits_19() -> None:
    assert RunState.SUPERSEDED in TERMINAL_RUN_STATES
    assert LIVE_RUN_STATES | {RunState.LOST} == SUPERSEDABLE_RUN_STATES
    assert exit_code_of_run("superseded") == ExitCode.RUN_SUPERSEDED == 19
    codes = [v for k, v in vars(ExitCode).items() if k.isupper()]
    assert len(codes) == len(set(codes)), "every exit code means one thing"


# -- the store, on every backend -----------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Coordinator]:
    if request.param == "sqlite":
        with open_coordinator(sqlite_url(tmp_path / "state.db")) as opened:
            yield opened
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as url, open_coordinator(url) as opened:
        yield opened


def _task(store: Coordinator) -> str:
    new = NewTask(
        prefix="demo",
        slug="fence",
        title="fence",
        repo="demo",
        repo_path="/src/demo",
        image=None,
        command=["true"],
        queued=True,
        doc={"title": "fence", "status": "active"},
    )
    return store.create_task(new).id


def _run(store: Coordinator, task_id: str) -> RunRecord:
    return store.create_run(NewRun(task_id=task_id, image=None, owner=OWNER, worktrees_dir="/w"))


def test_tokens_grow_with_every_takeover_and_never_for_the_holder(store: Coordinator) -> None:
    task_id = _task(store)
    assert store.claim_task(task_id, "a", 60).claims == 1
    assert store.claim_task(task_id, "a", 60).claims == 1, "the holder claiming again only extends"
    assert store.release_claim(task_id, "a", done=False)
    assert store.claim_task(task_id, "b", 60).claims == 2
    assert store.release_claim(task_id, "b", done=False)
    claimed = store.claim_next("c", 60)
    assert claimed is not None
    assert (claimed.lease_owner, claimed.claims) == ("c", 3)


def test_a_run_settles_only_while_its_claim_is_the_newest(store: Coordinator) -> None:
    task_id = _task(store)
    fence = store.claim_task(task_id, "a", 60).claims
    run = _run(store, task_id)
    # The token held: the state is written.
    store.update_run(run.id, expected=LIVE_RUN_STATES, fence=fence, state=RunState.PREPARING)
    store.release_claim(task_id, "a", done=False)
    store.claim_task(task_id, "b", 60)  # taken over
    with pytest.raises(FencedOutError) as out:
        store.update_run(run.id, expected=LIVE_RUN_STATES, fence=fence, state=RunState.EXITED, details={"x": 1})
    assert (out.value.fence, out.value.current, out.value.holder) == (fence, fence + 1, "b")
    kept = store.get_run(run.id)
    assert kept.state is RunState.PREPARING, "nothing written"
    assert "x" not in kept.model_dump(mode="json")["details"]
    # Checked before the state: a run someone else settled (lost) is told its claim is gone.
    store.update_run(run.id, state=RunState.LOST)
    with pytest.raises(FencedOutError):
        store.update_run(run.id, expected=LIVE_RUN_STATES, fence=fence, state=RunState.EXITED)
    # The superseded verdict is written from lost, and is a state change with its event.
    store.update_run(run.id, expected=SUPERSEDABLE_RUN_STATES, state=RunState.SUPERSEDED, detail="superseded")
    events = [(e.from_state, e.to_state) for e in store.run_events(run.id)]
    assert events[-1] == (RunState.LOST, RunState.SUPERSEDED)


def test_task_changes_and_releases_are_fenced_too(store: Coordinator) -> None:
    task_id = _task(store)
    fence = store.claim_task(task_id, "a", 60).claims
    task = store.get_task(task_id)
    store.update_task_doc(task_id, task.version, {**task.doc, "prUrl": "u1"}, actor="run:1", fence=fence)
    store.release_claim(task_id, "a", done=False)
    store.claim_task(task_id, "b", 60)
    task = store.get_task(task_id)
    with pytest.raises(FencedOutError):
        store.update_task_doc(task_id, task.version, {**task.doc, "prUrl": "u2"}, actor="run:1", fence=fence)
    with pytest.raises(FencedOutError):
        store.transition(task_id, TaskStatus.ACTIVE, TaskStatus.IMPLEMENTING, reason=None, actor="run:1", fence=fence)
    after = store.get_task(task_id)
    assert (after.doc["prUrl"], after.status, after.version) == ("u1", TaskStatus.ACTIVE, task.version)
    # A stale token never releases a lease, even one held under the same owner name again.
    store.release_claim(task_id, "b", done=False)
    again = store.claim_task(task_id, "a", 60).claims
    assert not store.release_claim(task_id, "a", done=True, fence=fence)
    assert store.get_task(task_id).lease_owner == "a"
    assert store.release_claim(task_id, "a", done=True, fence=again)
    assert store.get_task(task_id).lease_owner is None


# -- a run whose claim is taken over while it runs (fakes, real SQLite store) --------------


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def _live_run(world: FakeWorld) -> RunRecord:
    (live,) = world.store.list_runs(states=LIVE_RUN_STATES)
    return live


def _ask_for_changes(world: FakeWorld, run: RunRecord) -> None:
    """What an agent writes into its task copy: a field and a status move (both legal)."""
    copy = world.deps.paths(run).sandbox / "tasks" / "active" / f"{run.task_id}.task.json"
    doc = json.loads(copy.read_text())
    copy.write_text(json.dumps({**doc, "prUrl": "https://forge.example/pr/1", "status": "implementing"}))


def _agent(world: FakeWorld, during: Callable[[RunRecord], None]) -> None:
    def agent(_spec: Any, out: Path) -> tuple[int, bytes]:
        run = _live_run(world)
        _ask_for_changes(world, run)
        commit_bundle(out, TIP)
        during(run)
        return 0, b"done\n"

    world.sandbox.agent = agent


def _take_over(world: FakeWorld, task_id: str) -> int:
    """Another box takes the task, as after this one's lease ran out: its token is one higher."""
    store = world.store
    assert store.release_claim(task_id, run_lease_owner(OWNER), done=False)
    return store.claim_task(task_id, OTHER_BOX, 60).claims


def test_a_run_taken_over_while_it_runs_is_superseded_and_its_work_kept(world: FakeWorld) -> None:
    task_id = world.new_task()
    newer: list[int] = []
    _agent(world, lambda _run: newer.append(_take_over(world, task_id)))

    run = world.run_task(task_id)

    assert run.state is RunState.SUPERSEDED
    assert run.exit_code == 0, "the agent's own exit code is kept"
    claim, superseded = run.details.claim, run.details.superseded
    assert claim is not None
    assert superseded is not None
    assert (superseded.fence, superseded.current, superseded.holder) == (claim.fence, newer[0], OTHER_BOX)
    assert claim.fence is not None
    assert newer[0] == claim.fence + 1
    # Harvested all the same: its work is on its own branch, and the record lists it.
    assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP
    assert run.details.harvest is not None
    assert run.details.harvest.tip == TIP
    errors = run.details.errors or []
    assert errors[0].startswith(f"superseded: claim #{newer[0]} (held by {OTHER_BOX}) took task {task_id} over"), errors
    # Its task changes are the newer attempt's to make: none applied, each reported.
    changes = run.details.task_changes
    assert changes is not None
    assert changes.not_applied == ["prUrl", "status:implementing"]
    assert (changes.applied_fields, changes.applied_status) == ([], None)
    task = world.store.get_task(task_id)
    assert (task.status, task.doc.get("prUrl")) == (TaskStatus.ACTIVE, None)
    # The newer holder's lease is untouched by this run's release.
    assert (task.lease_owner, task.claims) == (OTHER_BOX, newer[0])
    assert [e.to_state for e in world.store.run_events(run.id)][-1] is RunState.SUPERSEDED


def test_a_run_whose_claim_holds_applies_its_changes_and_exits(world: FakeWorld) -> None:
    task_id = world.new_task()
    _agent(world, lambda _run: None)
    run = world.run_task(task_id)
    assert run.state is RunState.EXITED
    assert run.details.superseded is None
    changes = run.details.task_changes
    assert changes is not None
    assert (changes.applied_fields, changes.applied_status, changes.not_applied) == (["prUrl"], "implementing", [])
    task = world.store.get_task(task_id)
    assert (task.status, task.lease_owner) == (TaskStatus.IMPLEMENTING, None)


def test_a_run_another_box_marked_lost_becomes_superseded_with_its_late_harvest(world: FakeWorld) -> None:
    task_id = world.new_task()

    def meanwhile(run: RunRecord) -> None:
        # Another box's batch took the task over and settled this run lost, from its record alone
        # (on that box: nothing of this run's folders there, so no harvest, no task changes).
        _take_over(world, task_id)
        world.store.update_run(run.id, expected=LIVE_RUN_STATES, state=RunState.LOST, details={"errors": ["lost"]})

    _agent(world, meanwhile)
    run = world.run_task(task_id)
    assert run.state is RunState.SUPERSEDED
    assert run.details.harvest is not None
    assert run.details.harvest.tip == TIP
    states = [e.to_state for e in world.store.run_events(run.id)]
    assert states[-2:] == [RunState.LOST, RunState.SUPERSEDED]


def test_someone_settling_a_dead_runs_record_keeps_lost_but_applies_nothing(world: FakeWorld) -> None:
    """gc, or a batch taking a dead box's task over: what happened to the run is `lost`; its
    task changes are still not the task's once a newer claim holds it."""
    task_id = world.new_task()
    plan = world.service.plan(RunRequest(task=task_id, network="none"), host_environ={})
    run = world.service.create(plan, OWNER)
    _take_over(world, task_id)
    settled = settle_record(world.deps, world.store.get_run(run.id), "lost", "its launcher died")
    assert settled.state is RunState.LOST
    assert settled.details.superseded is None
    assert world.store.get_task(task_id).lease_owner == OTHER_BOX


def test_a_batch_run_records_the_batchs_token_and_is_fenced_by_it(world: FakeWorld) -> None:
    task_id = world.new_task()
    batch_owner = process_prefix(OWNER) + "0"  # a batch worker of the run's own process
    world.store.enqueue([task_id])
    claimed = world.store.claim_next(batch_owner, 60)
    assert claimed is not None

    def meanwhile(_run: RunRecord) -> None:
        assert world.store.release_claim(task_id, batch_owner, done=False)
        world.store.claim_task(task_id, OTHER_BOX, 60)

    _agent(world, meanwhile)
    run = world.run_task(task_id)
    claim = run.details.claim
    assert claim is not None
    assert (claim.owner, claim.fence, claim.borrowed) == (batch_owner, claimed.claims, True)
    assert run.state is RunState.SUPERSEDED
    assert world.store.get_task(task_id).lease_owner == OTHER_BOX


def test_a_concurrent_run_without_a_claim_is_not_fenced(world: FakeWorld) -> None:
    task_id = world.new_task()
    world.store.claim_task(task_id, OTHER_BOX, 60)
    _agent(world, lambda _run: None)
    run = world.run_task(task_id, concurrent=True)
    claim = run.details.claim
    assert claim is not None
    assert (claim.owner, claim.fence) == (None, None)
    assert run.state is RunState.EXITED
    assert world.store.get_task(task_id).lease_owner == OTHER_BOX


# -- publish ---------------------------------------------------------------------------------


class Remote:
    """Accepts every push; remembers what went where."""

    def __init__(self) -> None:
        self.refs: dict[str, str] = {}
        self.forges = 0

    def resolve_remote(self, repo: Any, remote: str) -> str:
        return "https://forge.example/t/demo.git"

    def push(self, repo: Any, remote: str, updates: list[Any], credential: Any) -> Any:
        from launcher.core.ports.publisher import PushAttempt, RefResult

        for update in updates:
            self.refs[update.remote_ref] = update.sha
        return PushAttempt(refs=[RefResult(remote_ref=u.remote_ref, status="new") for u in updates])

    def default_branch(self, repo: Any, remote: str, credential: Any) -> str | None:
        return "main"

    def diffstat(self, repo: Any, base: str, tip: str) -> str:
        return ""

    def open_forge(self, kind: str, api_url: str, remote_url: str, token: str) -> Any:
        self.forges += 1
        raise AssertionError("a fenced-out run never opens a pull request")


@pytest.fixture
def remote(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> Remote:
    made = Remote()
    world.deps.publisher = made
    monkeypatch.setattr(publish_step, "PUSH_BACKOFF_S", 0.0)
    return made


PUBLISH = PublishSettings(push=True, pr=True, token_env="FORGE_TOKEN")
TOKEN = {"FORGE_TOKEN": "t0ken"}


def test_a_superseded_run_pushes_no_branch_and_no_pull_request_only_its_own_refs(
    world: FakeWorld, remote: Remote
) -> None:
    task_id = world.new_task()
    _agent(world, lambda _run: _take_over(world, task_id))
    run = world.run_task(task_id)
    assert run.state is RunState.SUPERSEDED

    published = publish_run(world.deps, run, PUBLISH, remote, environ=TOKEN)

    assert remote.refs == {f"refs/launcher/runs/{run.id}/branch": TIP}
    assert f"refs/heads/{run.branch}" not in remote.refs
    assert remote.forges == 0
    details = published.details.publish
    assert details is not None
    assert (details.pushed, details.ref, details.error, details.pull_request) == (True, None, None, None)
    assert details.refs == {f"refs/launcher/runs/{run.id}/branch": TIP}
    assert details.note is not None
    assert "not pushed" in details.note
    assert not publish_failed(published), "expected of a superseded run: it exits 19, not 18"


def test_a_run_whose_claim_moved_after_it_settled_does_not_publish_its_branch(world: FakeWorld, remote: Remote) -> None:
    task_id = world.new_task()
    _agent(world, lambda _run: None)
    run = world.run_task(task_id)
    assert run.state is RunState.EXITED
    world.store.enqueue([task_id])
    world.store.claim_task(task_id, OTHER_BOX, 60)  # the task runs again elsewhere

    published = publish_run(world.deps, run, PUBLISH.model_copy(update={"pr": False}), remote, environ=TOKEN)

    assert remote.refs == {f"refs/launcher/runs/{run.id}/branch": TIP}
    assert publish_failed(published)
    details = published.details.publish
    assert details is not None
    assert details.error is not None
    assert "newer than this run's" in details.error
    assert world.repo.refs[f"refs/heads/{run.branch}"] == TIP, "the branch stays, locally"
    assert world.repo.refs["refs/heads/main"] == BASE

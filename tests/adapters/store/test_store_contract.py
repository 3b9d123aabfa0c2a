"""The coordinator contract, run against every backend (``store``: sqlite and postgres).

Each test states one promise of ``launcher.core.ports.Coordinator`` as the SQLite reference
keeps it; the PostgreSQL backend must keep it the same way, down to error types, messages and
the attributes the CLI reads from them. A few PostgreSQL-only tests at the end cover what only
a network database has: connection failures, dropped connections, a scripted history replayed
on both backends yielding equal records.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pg import pg_url

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.adapters.store import postgres as pg_store
from launcher.adapters.store import sqlite as sqlite_store
from launcher.core.ports import Coordinator
from launcher.core.transitions import RunState, TaskStatus
from launcher.errors import (
    CapacityError,
    IllegalTransitionError,
    InvalidInputError,
    NotFoundError,
    StateStoreError,
    TransitionConflictError,
)
from launcher.models import AdoptedTask, NewRun, NewTask, RunOwner, TaskRecord

__all__ = ["pg_url"]

S = TaskStatus
POLL_DEADLINE_S = 10.0


def new_task(prefix: str = "demo", slug: str = "fix-it", *, queued: bool = False, **doc: Any) -> NewTask:
    return NewTask(
        prefix=prefix,
        slug=slug,
        title=f"Title of {slug}",
        repo=prefix,
        repo_path=f"/src/{prefix}",
        image="launcher/agent-base:latest",
        command=["claude", "-p"],
        queued=queued,
        doc={"title": f"Title of {slug}", "status": "active", **doc},
    )


def adopted(task_id: str, number: int, *, prefix: str = "demo", slug: str = "found") -> AdoptedTask:
    return AdoptedTask(
        id=task_id,
        prefix=prefix,
        number=number,
        slug=slug,
        title="found in the harness",
        repo=prefix,
        repo_path=None,
        doc={"id": task_id, "title": "found in the harness", "status": "verifying"},
        file_path=f"/case/tasks/active/{task_id}.task.json",
        file_sha256="a" * 64,
    )


def new_run(task_id: str, **details: Any) -> NewRun:
    return NewRun(
        task_id=task_id,
        image="launcher/agent-base:latest",
        owner=RunOwner(host="box", pid=4242, start_ticks=99),
        worktrees_dir="/case/.launcher/worktrees",
        details=details,
    )


def schema_version(url: str) -> int:
    if url.startswith("sqlite:///"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
            return int(db.execute("SELECT version FROM schema_version").fetchone()[0])
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None
        return int(row[0])


def set_schema_version(url: str, version: int) -> None:
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        with db:
            db.execute("UPDATE schema_version SET version = ?", (version,))
        db.close()
        return
    with psycopg.connect(url) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (version,))


def backend_schema_version(url: str) -> int:
    return sqlite_store.SCHEMA_VERSION if url.startswith("sqlite:///") else pg_store.SCHEMA_VERSION


# -- tasks ---------------------------------------------------------------------------------


def test_create_task_numbers_each_prefix_from_one(store: Coordinator) -> None:
    demo = [store.create_task(new_task("demo", f"d{n}")) for n in range(3)]
    other = [store.create_task(new_task("other", f"o{n}")) for n in range(2)]
    demo.append(store.create_task(new_task("demo", "d3")))
    assert [t.number for t in demo] == [1, 2, 3, 4]
    assert [t.number for t in other] == [1, 2]
    assert [t.id for t in other] == ["other-1-o0", "other-2-o1"]
    first = demo[0]
    assert first.id == "demo-1-d0"
    assert (first.prefix, first.slug, first.repo, first.repo_path) == ("demo", "d0", "demo", "/src/demo")
    assert (first.image, first.command, first.base_ref) == ("launcher/agent-base:latest", ["claude", "-p"], "HEAD")
    assert first.status is S.ACTIVE
    assert first.version == 1
    assert first.origin == "launcher"
    assert not first.queued
    assert first.queued_at is None
    assert first.claims == 0
    assert first.created_at == first.updated_at
    assert first.created_at.tzinfo is not None
    assert abs(first.created_at - datetime.now(UTC)) < timedelta(minutes=5)


def test_create_task_document_gets_id_first_and_keeps_its_order(store: Coordinator) -> None:
    task = store.create_task(
        NewTask(
            prefix="demo",
            slug="ordered",
            title="t",
            repo="demo",
            doc={"zeta": 1, "id": "ignored", "alpha": {"nested": [1, "two", None]}, "status": "implementing"},
        )
    )
    assert list(task.doc) == ["id", "zeta", "alpha", "status"]
    assert task.doc == {
        "id": "demo-1-ordered",
        "zeta": 1,
        "alpha": {"nested": [1, "two", None]},
        "status": "implementing",
    }
    assert task.status is S.IMPLEMENTING
    defaulted = store.create_task(NewTask(prefix="demo", slug="plain", title="t", repo="demo", doc={}))
    assert defaulted.status is S.ACTIVE
    assert defaulted.doc == {"id": "demo-2-plain", "status": "active"}


def test_get_and_resolve_return_the_stored_record(store: Coordinator) -> None:
    created = [store.create_task(new_task("demo", f"s{n}")) for n in range(12)]
    assert store.get_task("demo-3-s2") == created[2]
    assert store.resolve_task("demo-3-s2") == created[2]
    assert store.resolve_task("demo-12") == created[11]
    assert store.resolve_task("demo-1") == created[0]
    for ref in ("demo-13", "demo", "nope-1", "demo-x", ""):
        with pytest.raises(NotFoundError, match="no task"):
            store.resolve_task(ref)
    with pytest.raises(NotFoundError) as caught:
        store.get_task("demo-99-none")
    assert caught.value.message == "no task 'demo-99-none'"
    assert caught.value.hint == "`launcher task list` shows the known tasks"


@pytest.mark.parametrize("digits", [12, 13, 18])
def test_a_long_number_resolves_by_its_short_form(store: Coordinator, digits: int) -> None:
    """Both backends take up to 18 digits (a 64-bit integer); SQLite once stopped at 11."""
    store.reserve_numbers("demo", 10**digits - 2)
    task = store.create_task(new_task())
    assert task.number == 10**digits - 1
    assert store.resolve_task(f"demo-{task.number}") == task
    with pytest.raises(NotFoundError):
        store.resolve_task(f"demo-{task.number}0")
    assert store.create_run(new_run(task.id)).id == f"demo-{task.number}.1"


@pytest.mark.parametrize(
    "ref", ["demo-\u00b2", "demo-" + "9" * 19, "demo-" + "9" * 30, "demo-\u0661", "demo-+1", "demo- 1"]
)
def test_odd_short_forms_are_not_found(store: Coordinator, ref: str) -> None:
    store.create_task(new_task())
    with pytest.raises(NotFoundError):
        store.resolve_task(ref)


def test_list_tasks_orders_by_prefix_then_number_and_filters_by_status(store: Coordinator) -> None:
    for n in range(11):
        store.create_task(new_task("b", f"b{n}"))
        if n < 2:
            store.create_task(new_task("a", f"a{n}"))
    store.create_task(new_task("B", "upper"))  # byte order: "B" < "a" < "b"
    listed = store.list_tasks()
    assert [(t.prefix, t.number) for t in listed] == [("B", 1), ("a", 1), ("a", 2)] + [("b", n) for n in range(1, 12)]
    store.transition("b-10-b9", S.ACTIVE, S.IMPLEMENTING, reason=None, actor="me")
    store.transition("a-2-a1", S.ACTIVE, S.IMPLEMENTING, reason=None, actor="me")
    assert [t.id for t in store.list_tasks(S.IMPLEMENTING)] == ["a-2-a1", "b-10-b9"]
    assert store.list_tasks(S.MERGED) == []
    assert len(store.list_tasks(S.ACTIVE)) == 12


def test_transition_compare_and_set(store: Coordinator) -> None:
    task = store.create_task(new_task())
    updated, record = store.transition(task.id, S.ACTIVE, S.IMPLEMENTING, reason="starting", actor="alice")
    assert updated.status is S.IMPLEMENTING
    assert updated.doc["status"] == "implementing"
    assert updated.doc["title"] == task.doc["title"]
    assert updated.version == 2
    assert updated.updated_at >= task.updated_at
    assert (record.task_id, record.from_status, record.to_status) == (task.id, S.ACTIVE, S.IMPLEMENTING)
    assert (record.reason, record.actor) == ("starting", "alice")
    assert store.history(task.id)[-1] == record

    with pytest.raises(TransitionConflictError) as conflict:
        store.transition(task.id, S.ACTIVE, S.IMPLEMENTING, reason=None, actor="bob")
    assert (conflict.value.actual, conflict.value.expected) == ("implementing", "active")
    assert conflict.value.message == (f"task {task.id} is implementing, not active: someone else changed it first")
    with pytest.raises(IllegalTransitionError) as illegal:
        store.transition(task.id, S.IMPLEMENTING, S.MERGED, reason=None, actor="bob")
    assert (illegal.value.current, illegal.value.target) == ("implementing", "merged")
    assert "illegal transition implementing -> merged" in illegal.value.message
    with pytest.raises(NotFoundError):
        store.transition("demo-9-missing", S.ACTIVE, S.IMPLEMENTING, reason=None, actor="bob")

    # Neither failure changed anything.
    assert store.get_task(task.id) == updated
    assert len(store.history(task.id)) == 2


def test_pr_opened_to_itself_is_a_recorded_transition(store: Coordinator) -> None:
    task = store.create_task(new_task(status="closing"))
    task, _ = store.transition(task.id, S.CLOSING, S.PR_OPENED, reason=None, actor="a")
    again, record = store.transition(task.id, S.PR_OPENED, S.PR_OPENED, reason="pushed again", actor="a")
    assert again.version == task.version + 1
    assert (record.from_status, record.to_status) == (S.PR_OPENED, S.PR_OPENED)


def test_history_lists_every_change_in_order(store: Coordinator) -> None:
    task = store.create_task(new_task())
    path = [S.IMPLEMENTING, S.VERIFYING, S.REVIEWING, S.CLOSING, S.PR_OPENED, S.MERGED]
    current = S.ACTIVE
    records = []
    for target in path:
        records.append(store.transition(task.id, current, target, reason=f"to {target}", actor="ci")[1])
        current = target
    history = store.history(task.id)
    assert history[0].from_status is None
    assert history[0].to_status is S.ACTIVE
    assert (history[0].reason, history[0].actor) == ("created", "launcher")
    assert history[1:] == records
    assert [h.seq for h in history] == sorted({h.seq for h in history})
    assert [h.at for h in history] == sorted(h.at for h in history)
    other = store.create_task(new_task(slug="other"))
    assert [h.to_status for h in store.history(other.id)] == [S.ACTIVE]
    with pytest.raises(NotFoundError):
        store.history("demo-9-missing")


def test_update_task_doc_is_a_version_compare_and_set(store: Coordinator) -> None:
    task = store.create_task(new_task())
    doc = {**task.doc, "description": "more words"}
    updated = store.update_task_doc(task.id, 1, doc, actor="alice")
    assert updated.version == 2
    assert updated.doc == doc
    assert updated.status is S.ACTIVE

    with pytest.raises(TransitionConflictError) as stale:
        store.update_task_doc(task.id, 1, {**doc, "description": "lost update"}, actor="bob")
    assert (stale.value.actual, stale.value.expected) == ("2", "1")
    assert stale.value.message == f"task {task.id} changed since version 1 (now 2)"

    with pytest.raises(InvalidInputError, match="may not change its id or status"):
        store.update_task_doc(task.id, 2, {**doc, "status": "implementing"}, actor="bob")
    with pytest.raises(InvalidInputError, match="may not change its id or status"):
        store.update_task_doc(task.id, 2, {**doc, "id": "demo-2-other"}, actor="bob")
    with pytest.raises(NotFoundError):
        store.update_task_doc("demo-9-missing", 1, doc, actor="bob")

    # A transition bumps the version too: an editor holding version 2 has lost.
    store.transition(task.id, S.ACTIVE, S.IMPLEMENTING, reason=None, actor="ci")
    with pytest.raises(TransitionConflictError):
        store.update_task_doc(task.id, 2, {**doc, "status": "implementing"}, actor="alice")
    final = store.get_task(task.id)
    assert final.version == 3
    assert final.doc["description"] == "more words"
    assert len(store.history(task.id)) == 2  # document edits are not status history


# -- adoption and numbers ------------------------------------------------------------------


def test_adopt_task_reserves_its_number(store: Coordinator) -> None:
    store.create_task(new_task(slug="first"))
    task = store.adopt_task(adopted("demo-7-found", 7))
    assert (task.id, task.number, task.origin, task.status) == ("demo-7-found", 7, "adopted", S.VERIFYING)
    assert (task.file_path, task.file_sha256) == ("/case/tasks/active/demo-7-found.task.json", "a" * 64)
    assert (task.base_ref, task.image, task.command, task.queued, task.version) == ("HEAD", None, [], False, 1)
    assert task.doc == adopted("demo-7-found", 7).doc
    history = store.history(task.id)
    assert [(h.from_status, h.to_status, h.actor) for h in history] == [(None, S.VERIFYING, "launcher")]
    assert history[0].reason == "adopted from /case/tasks/active/demo-7-found.task.json"

    assert store.create_task(new_task(slug="next")).number == 8
    # A lower number adopted later does not move the counter back.
    store.adopt_task(adopted("demo-3-older", 3, slug="older"))
    assert store.create_task(new_task(slug="after")).number == 9

    with pytest.raises(TransitionConflictError) as known:
        store.adopt_task(adopted("demo-7-found", 7))
    assert (known.value.actual, known.value.expected) == ("known", "new")
    assert known.value.message == "task demo-7-found is already known"
    with pytest.raises(InvalidInputError) as clash:
        store.adopt_task(adopted("demo-7-twin", 7, slug="twin"))
    assert clash.value.message == (
        "task file /case/tasks/active/demo-7-twin.task.json (demo-7-twin) reuses number 7 of demo-7-found"
    )
    with pytest.raises(NotFoundError):
        store.get_task("demo-7-twin")
    # A failed adoption reserved nothing either.
    with pytest.raises(InvalidInputError):
        store.adopt_task(adopted("demo-1-again", 1, slug="again"))
    assert store.create_task(new_task(slug="last")).number == 10


def test_adopt_task_keeps_its_base_ref(store: Coordinator) -> None:
    task = store.adopt_task(adopted("demo-4-based", 4).model_copy(update={"base_ref": "release/2.x"}))
    assert task.base_ref == "release/2.x"
    assert store.get_task(task.id).base_ref == "release/2.x"


def test_reserve_numbers_only_ever_raises_the_counter(store: Coordinator) -> None:
    store.reserve_numbers("fresh", 3)
    assert store.create_task(new_task("fresh", "a")).number == 4
    store.reserve_numbers("fresh", 20)
    store.reserve_numbers("fresh", 5)
    assert store.create_task(new_task("fresh", "b")).number == 21
    store.reserve_numbers("fresh", 21)
    assert store.create_task(new_task("fresh", "c")).number == 22
    assert store.create_task(new_task("other", "d")).number == 1


def test_record_file_and_task_file_paths(store: Coordinator) -> None:
    assert store.task_file_paths() == set()
    one = store.create_task(new_task(slug="one"))
    two = store.create_task(new_task(slug="two"))
    assert store.task_file_paths() == set()
    store.record_file(one.id, "/case/tasks/active/demo-1-one.task.json", "1" * 64)
    store.record_file(two.id, "/case/tasks/active/demo-2-two.task.json", "2" * 64)
    store.record_file(two.id, "/case/tasks/done/demo-2-two.task.json", "3" * 64)
    assert store.task_file_paths() == {
        "/case/tasks/active/demo-1-one.task.json",
        "/case/tasks/done/demo-2-two.task.json",
    }
    got = store.get_task(two.id)
    assert (got.file_path, got.file_sha256) == ("/case/tasks/done/demo-2-two.task.json", "3" * 64)
    assert got.version == two.version  # where the file is, is not a change of the task


def test_import_external_change(store: Coordinator) -> None:
    task = store.create_task(new_task())
    same_status = {**task.doc, "notes": "edited by hand"}
    edited = store.import_external_change(task.id, same_status, "b" * 64)
    assert (edited.doc, edited.file_sha256, edited.version, edited.status) == (same_status, "b" * 64, 2, S.ACTIVE)
    assert len(store.history(task.id)) == 1

    # A hand edit may jump anywhere: it is the new truth, recorded as such.
    jumped = {**same_status, "status": "reviewing"}
    moved = store.import_external_change(task.id, jumped, "c" * 64)
    assert (moved.status, moved.version, moved.doc) == (S.REVIEWING, 3, jumped)
    last = store.history(task.id)[-1]
    assert (last.from_status, last.to_status, last.actor) == (S.ACTIVE, S.REVIEWING, "external")
    assert last.reason == "task file changed outside launcher"
    with pytest.raises(NotFoundError):
        store.import_external_change("demo-9-missing", jumped, "d" * 64)


# -- the queue -----------------------------------------------------------------------------


def queued_tasks(store: Coordinator, count: int) -> list[TaskRecord]:
    return [store.create_task(new_task(slug=f"q{n}")) for n in range(count)]


def test_claims_go_oldest_first(store: Coordinator) -> None:
    t1, t2, t3, t4 = queued_tasks(store, 4)
    store.enqueue([t3.id])
    store.enqueue([t1.id])
    # One call: one queued_at for both; the number breaks the tie.
    enqueued = store.enqueue([t4.id, t2.id])
    assert [t.id for t in enqueued] == [t4.id, t2.id]
    assert all(t.queued and t.queued_at is not None for t in enqueued)
    claimed = [store.claim_next(f"w{n}", 60) for n in range(4)]
    assert [c.id if c else None for c in claimed] == [t3.id, t1.id, t2.id, t4.id]
    assert store.claim_next("w9", 60) is None


def test_claim_takes_a_lease_that_blocks_others_until_released(store: Coordinator) -> None:
    task = store.create_task(new_task(queued=True))
    assert task.queued
    assert task.queued_at is not None
    before = time.time()
    claim = store.claim_next("worker-a", 30)
    assert claim is not None
    assert claim.id == task.id
    assert (claim.lease_owner, claim.claims, claim.queued) == ("worker-a", 1, True)
    assert claim.lease_expires is not None
    assert before + 25 < claim.lease_expires < time.time() + 35
    assert store.claim_next("worker-b", 30) is None  # unexpired lease

    assert store.renew_lease(task.id, "worker-a", 60)
    renewed = store.get_task(task.id).lease_expires
    assert renewed is not None
    assert renewed > claim.lease_expires
    assert not store.renew_lease(task.id, "worker-b", 60)
    assert not store.release_claim(task.id, "worker-b", done=True)
    assert store.get_task(task.id).lease_owner == "worker-a"

    assert store.release_claim(task.id, "worker-a", done=False)
    released = store.get_task(task.id)
    assert (released.lease_owner, released.lease_expires, released.queued) == (None, None, True)
    again = store.claim_next("worker-b", 30)
    assert again is not None
    assert (again.lease_owner, again.claims) == ("worker-b", 2)

    assert store.release_claim(task.id, "worker-b", done=True)
    finished = store.get_task(task.id)
    assert (finished.queued, finished.lease_owner, finished.claims) == (False, None, 2)
    assert store.claim_next("worker-c", 30) is None
    assert not store.release_claim(task.id, "worker-b", done=True)  # nothing left to release


def test_an_expired_lease_can_be_claimed_by_another_worker(store: Coordinator) -> None:
    task = store.create_task(new_task(queued=True))
    first = store.claim_next("worker-a", 0.05)
    assert first is not None
    assert first.id == task.id
    deadline = time.monotonic() + POLL_DEADLINE_S
    taken = None
    while taken is None:
        assert time.monotonic() < deadline, "an expired lease never became claimable"
        taken = store.claim_next("worker-b", 30)
    assert (taken.id, taken.lease_owner, taken.claims) == (task.id, "worker-b", 2)
    # The first worker has lost it: it can neither renew nor release it.
    assert not store.renew_lease(task.id, "worker-a", 30)
    assert not store.release_claim(task.id, "worker-a", done=True)
    assert store.get_task(task.id).lease_owner == "worker-b"


def test_enqueue_clears_the_lease_and_is_all_or_nothing(store: Coordinator) -> None:
    one, two = queued_tasks(store, 2)
    store.enqueue([one.id])
    assert store.claim_next("worker-a", 60) is not None
    (requeued,) = store.enqueue([one.id])
    assert (requeued.lease_owner, requeued.lease_expires, requeued.queued) == (None, None, True)
    assert requeued.claims == 1
    with pytest.raises(NotFoundError):
        store.enqueue([two.id, "demo-9-missing"])
    assert not store.get_task(two.id).queued
    claim = store.claim_next("worker-b", 60)
    assert claim is not None
    assert claim.id == one.id
    assert store.enqueue([]) == []


# -- runs ----------------------------------------------------------------------------------


def test_create_run_allocates_attempts_per_task_and_one_global_seq(store: Coordinator) -> None:
    a = store.create_task(new_task(slug="a"))
    b = store.create_task(new_task("other", "b"))
    runs = [
        store.create_run(new_run(a.id, base="abc")),
        store.create_run(new_run(b.id)),
        store.create_run(new_run(a.id)),
        store.create_run(new_run(a.id)),
        store.create_run(new_run(b.id)),
    ]
    assert [(r.task_id, r.attempt) for r in runs] == [(a.id, 1), (b.id, 1), (a.id, 2), (a.id, 3), (b.id, 2)]
    assert [r.seq for r in runs] == [1, 2, 3, 4, 5]
    first = runs[0]
    assert first.id == "demo-1.1"
    assert first.branch == "launcher/demo-1-a/1"
    assert first.worktree == "/case/.launcher/worktrees/demo-1.1"
    assert runs[4].id == "other-1.2"
    assert first.state is RunState.CREATED
    assert first.owner == RunOwner(host="box", pid=4242, start_ticks=99)
    assert (first.image, first.details.model_dump(mode="json"), first.cancel_requested) == (
        "launcher/agent-base:latest",
        {"base": "abc"},
        False,
    )
    assert (first.container_id, first.exit_code, first.uid, first.started_at, first.ended_at) == (None,) * 5
    assert store.get_run(first.id) == first
    events = store.run_events(first.id)
    assert [(e.run_id, e.from_state, e.to_state, e.detail) for e in events] == [
        (first.id, None, RunState.CREATED, None)
    ]
    assert events[0].at == first.created_at

    assert [r.id for r in store.list_runs()] == [r.id for r in runs]
    assert [r.id for r in store.list_runs(task_id=a.id)] == ["demo-1.1", "demo-1.2", "demo-1.3"]
    assert store.list_runs(states=[RunState.RUNNING]) == []
    assert store.list_runs(states=[]) == []
    assert len(store.list_runs(states=[RunState.CREATED, RunState.RUNNING], task_id=b.id)) == 2
    with pytest.raises(NotFoundError) as missing:
        store.get_run("demo-1.9")
    assert missing.value.hint == "`launcher ps --all` shows the known runs"
    with pytest.raises(NotFoundError):
        store.create_run(new_run("demo-9-missing"))
    assert store.create_run(new_run(b.id)).seq == 6  # the failed create burnt no number


def test_update_run_compare_and_set_and_details_merge(store: Coordinator) -> None:
    task = store.create_task(new_task())
    run = store.create_run(new_run(task.id, base="abc"))
    prepared = store.update_run(run.id, expected=[RunState.CREATED], state=RunState.PREPARING, detail="setup")
    assert prepared.state is RunState.PREPARING
    assert prepared.updated_at >= run.updated_at

    with pytest.raises(TransitionConflictError) as conflict:
        store.update_run(run.id, expected=[RunState.CREATED, RunState.RUNNING], state=RunState.CANCELLED)
    assert (conflict.value.actual, conflict.value.expected) == ("preparing", "created|running")
    assert conflict.value.message == f"run {run.id} is preparing, not created or running"

    started = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    running = store.update_run(
        run.id,
        expected=[RunState.PREPARING],
        state=RunState.RUNNING,
        container_id="c0ffee",
        uid=20001,
        started_at=started,
        details={"image_id": "sha256:1"},
    )
    assert (running.container_id, running.uid, running.started_at) == ("c0ffee", 20001, started)
    assert running.details.model_dump(mode="json") == {"base": "abc", "image_id": "sha256:1"}
    merged = store.update_run(run.id, details={"image_id": "sha256:2", "harvest": {"commits": 2}})
    assert merged.details.model_dump(mode="json") == {"base": "abc", "image_id": "sha256:2", "harvest": {"commits": 2}}
    assert merged.state is RunState.RUNNING
    cancelling = store.update_run(run.id, expected=[RunState.RUNNING], cancel_requested=True, owner=None)
    assert cancelling.cancel_requested is True
    assert cancelling.owner is None
    ended = datetime(2026, 1, 2, 4, 0, tzinfo=UTC)
    done = store.update_run(run.id, state=RunState.CANCELLED, detail="stopped by user", exit_code=137, ended_at=ended)
    assert (done.state, done.exit_code, done.ended_at) == (RunState.CANCELLED, 137, ended)
    store.update_run(run.id, state=RunState.CANCELLED)  # same state: no event

    events = store.run_events(run.id)
    assert [(e.from_state, e.to_state, e.detail) for e in events] == [
        (None, RunState.CREATED, None),
        (RunState.CREATED, RunState.PREPARING, "setup"),
        (RunState.PREPARING, RunState.RUNNING, None),
        (RunState.RUNNING, RunState.CANCELLED, "stopped by user"),
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert store.get_run(run.id) == store.list_runs(task_id=task.id)[0]

    with pytest.raises(ValueError, match="unknown run fields"):
        store.update_run(run.id, task_id="demo-2-other")
    with pytest.raises(NotFoundError):
        store.update_run("demo-1.9", state=RunState.LOST)
    assert store.run_events("demo-1.9") == []


# -- lifetime ------------------------------------------------------------------------------


def test_reopening_keeps_data_and_schema_version(coordinator_url: str) -> None:
    with open_coordinator(coordinator_url) as store:
        task = store.create_task(new_task())
        task, _ = store.transition(task.id, S.ACTIVE, S.IMPLEMENTING, reason=None, actor="a")
        run = store.create_run(new_run(task.id))
        store.enqueue([task.id])
        task = store.get_task(task.id)
        history = store.history(task.id)
    version = schema_version(coordinator_url)
    assert version == backend_schema_version(coordinator_url) == 7
    with open_coordinator(coordinator_url) as store:
        assert store.get_task(task.id) == task
        assert store.history(task.id) == history
        assert store.get_run(run.id) == run
        assert store.create_task(new_task(slug="two")).number == 2
        assert store.create_run(new_run(task.id)).attempt == 2
    assert schema_version(coordinator_url) == version


def test_a_newer_schema_is_refused(coordinator_url: str) -> None:
    open_coordinator(coordinator_url).close()
    set_schema_version(coordinator_url, 99)
    with pytest.raises(StateStoreError, match="has schema version 99, newer than this launcher understands") as e:
        open_coordinator(coordinator_url)
    assert e.value.hint == "upgrade launcher"


def test_a_closed_store_refuses_work(coordinator_url: str) -> None:
    store = open_coordinator(coordinator_url)
    store.close()
    with pytest.raises(StateStoreError):
        store.list_tasks()


# -- PostgreSQL only -----------------------------------------------------------------------


def test_postgres_unreachable_server_is_a_state_store_error_with_a_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHER_RECONNECT_SECONDS", "1")  # a refused server is retried for this long
    with pytest.raises(StateStoreError) as caught:
        open_coordinator("postgresql://launcher:s3cret-pw@127.0.0.1:1/launcher?connect_timeout=3")
    text = str(caught.value)
    assert "cannot connect to the PostgreSQL state store postgresql://launcher:***@127.0.0.1:1/launcher" in text
    assert "s3cret-pw" not in text
    assert caught.value.hint is not None
    assert "server is running" in caught.value.hint
    assert caught.value.exit_code == 7


def test_postgres_url_is_shown_without_its_password() -> None:
    assert pg_store.redact_url("postgres://u:pw@h:5/db?password=x&sslmode=require") == (
        "postgres://u:***@h:5/db?password=***&sslmode=require"
    )
    assert pg_store.redact_url("postgresql://h/db") == "postgresql://h/db"


@pytest.mark.parametrize("ref", ["demo-\u00b2", "demo-" + "9" * 30, "demo-\u0661"])
def test_postgres_odd_short_forms_are_not_found(pg_url: str, ref: str) -> None:
    with open_coordinator(pg_url) as store:
        store.create_task(new_task())
        with pytest.raises(NotFoundError):
            store.resolve_task(ref)
        assert store.resolve_task("demo-01").number == 1


def test_postgres_missing_database_is_a_state_store_error(pg_url: str) -> None:
    with pytest.raises(StateStoreError, match="cannot connect") as caught:
        open_coordinator(pg_url.rsplit("/", 1)[0] + "/no_such_database")
    assert "does not exist" in str(caught.value)


def test_postgres_store_reconnects_after_losing_its_connection(pg_url: str) -> None:
    with open_coordinator(pg_url) as store:
        task = store.create_task(new_task())
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        # The dropped connection is ridden out: the call reconnects ([coordinator] reconnect_seconds).
        assert store.get_task(task.id) == task
        assert store.create_task(new_task(slug="after")).number == 2


def wait_until_blocked_on_a_lock(url: str, deadline_s: float = POLL_DEADLINE_S) -> None:
    with psycopg.connect(url, autocommit=True) as watcher:
        deadline = time.monotonic() + deadline_s
        while True:
            row = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'launcher' AND wait_event_type = 'Lock'"
            ).fetchone()
            if row is not None and row[0] > 0:
                return
            assert time.monotonic() < deadline, "the coordinator never waited for the lock"
            time.sleep(0.01)


def test_postgres_claim_waits_for_a_momentary_row_lock_instead_of_reporting_an_empty_queue(pg_url: str) -> None:
    """SKIP LOCKED alone would answer None while a transition holds the only queued task."""
    import threading

    with open_coordinator(pg_url) as store:
        task = store.create_task(new_task(queued=True))
        got: list[TaskRecord | None] = []
        with psycopg.connect(pg_url) as other:
            other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task.id,))
            claimer = threading.Thread(target=lambda: got.append(store.claim_next("worker", 60)))
            claimer.start()
            wait_until_blocked_on_a_lock(pg_url)
            other.commit()
        claimer.join(timeout=POLL_DEADLINE_S)
        assert len(got) == 1
        assert got[0] is not None
        assert got[0].id == task.id


def test_postgres_lock_timeout_is_a_state_store_error(pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_store, "LOCK_TIMEOUT_S", 0.2)
    with open_coordinator(pg_url) as store:
        task = store.create_task(new_task())
        with psycopg.connect(pg_url) as other:
            other.execute("SELECT 1 FROM tasks WHERE id = %s FOR UPDATE", (task.id,))
            with pytest.raises(StateStoreError, match="stayed locked") as caught:
                store.transition(task.id, S.ACTIVE, S.IMPLEMENTING, reason=None, actor="a")
            assert caught.value.hint == "another launcher process holds a long transaction; retry"
        assert store.get_task(task.id).status is S.ACTIVE
        store.transition(task.id, S.ACTIVE, S.IMPLEMENTING, reason=None, actor="a")


def test_postgres_concurrent_opens_of_a_fresh_database_migrate_once(pg_url: str) -> None:
    import threading

    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def open_one() -> None:
        try:
            barrier.wait(timeout=30)
            open_coordinator(pg_url).close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert schema_version(pg_url) == pg_store.SCHEMA_VERSION


def script(store: Coordinator) -> dict[str, Any]:
    """The same operations on any backend; returns everything observable, minus clock readings."""
    created = [store.create_task(new_task(p, f"s{n}", queued=n % 2 == 0)) for n in range(3) for p in ("x", "y")]
    store.adopt_task(adopted("x-9-found", 9, prefix="x"))
    store.reserve_numbers("y", 5)
    store.create_task(new_task("x", "after"))
    store.create_task(new_task("y", "after"))
    store.transition(created[0].id, S.ACTIVE, S.IMPLEMENTING, reason="go", actor="a")
    store.update_task_doc(created[1].id, 1, {**created[1].doc, "extra": [1, 2]}, actor="a")
    store.import_external_change(created[2].id, {**created[2].doc, "status": "closing"}, "f" * 64)
    store.record_file(created[3].id, "/f/y-2-s1.task.json", "e" * 64)
    claims = [store.claim_next("w", 60), store.claim_next("w", 60)]
    store.release_claim(created[0].id, "w", done=True)
    run = store.create_run(new_run(created[0].id, base="b"))
    store.update_run(run.id, expected=[RunState.CREATED], state=RunState.FAILED, detail="boom", exit_code=2)
    store.create_run(new_run(created[0].id))

    clock = {"created_at", "updated_at", "queued_at", "lease_expires", "at"}

    def plain(record: Any) -> dict[str, Any]:
        return {k: v for k, v in record.model_dump(mode="json").items() if k not in clock}

    return {
        "tasks": [plain(t) for t in store.list_tasks()],
        "claims": [plain(c) if c else None for c in claims],
        "history": {t.id: [plain(h) for h in store.history(t.id)] for t in store.list_tasks()},
        "runs": [plain(r) for r in store.list_runs()],
        "events": {r.id: [plain(e) for e in store.run_events(r.id)] for r in store.list_runs()},
        "files": sorted(store.task_file_paths()),
    }


def test_postgres_and_sqlite_agree_on_a_scripted_history(tmp_path: Path, pg_url: str) -> None:
    with open_coordinator(sqlite_url(tmp_path / "state.db")) as lite, open_coordinator(pg_url) as pg:
        assert isinstance(pg, pg_store.PostgresCoordinator)
        from_sqlite, from_postgres = script(lite), script(pg)
    # Transition seqs are global in both; compare them as they are.
    assert from_postgres == from_sqlite


# -- run-network subnet slots ---------------------------------------------------------------


def test_subnet_leases_take_the_lowest_free_slot_and_free_it_on_release(store: Coordinator) -> None:
    assert store.lease_subnet("R-1", 4) == 0
    assert store.lease_subnet("R-2", 4) == 1
    assert store.lease_subnet("R-3", 4, skip=[2]) == 3
    assert store.subnet_leases() == {0: "R-1", 1: "R-2", 3: "R-3"}
    assert store.release_subnet("R-1") is True
    assert store.release_subnet("R-1") is False
    assert store.lease_subnet("R-4", 4) == 0


def test_a_lease_moves_from_a_pool_slot_to_the_run_that_took_it(store: Coordinator) -> None:
    assert store.lease_subnet("pool:p1", 4) == 0
    assert store.transfer_subnet("pool:p1", "R-1") is True
    assert store.subnet_leases() == {0: "R-1"}
    # Once moved, the slot's name holds nothing: a second transfer (a racing gc) finds nothing.
    assert store.transfer_subnet("pool:p1", "R-2") is False
    assert store.release_subnet("R-1") is True
    assert store.subnet_leases() == {}


def test_a_second_lease_replaces_the_runs_first(store: Coordinator) -> None:
    assert store.lease_subnet("R-1", 8) == 0
    # Docker refused slot 0 (another tool's network overlaps it): move on, never hold two.
    assert store.lease_subnet("R-1", 8, skip=[0]) == 1
    assert store.subnet_leases() == {1: "R-1"}


def test_a_full_pool_is_a_capacity_error_naming_the_setting(store: Coordinator) -> None:
    store.lease_subnet("R-1", 2)
    store.lease_subnet("R-2", 2)
    with pytest.raises(CapacityError, match="subnet_pool"):
        store.lease_subnet("R-3", 2)
    assert store.subnet_leases() == {0: "R-1", 1: "R-2"}

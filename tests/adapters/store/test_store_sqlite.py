"""The embedded coordinator: migrations, damaged files, lookups, and run records as CAS."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke

from launcher.adapters.store.sqlite import MIGRATIONS, SCHEMA_VERSION, SqliteCoordinator
from launcher.core.transitions import RunState, TaskStatus
from launcher.errors import ExitCode, NotFoundError, StateStoreError, TransitionConflictError
from launcher.models import NewRun, NewTask, RunOwner

TESTS = Path(__file__).resolve().parents[2]


def new_task(prefix: str = "demo", slug: str = "fix-it", **extra: Any) -> NewTask:
    doc = {"status": "active", "repo": prefix, "tested": False}
    return NewTask(prefix=prefix, slug=slug, title=f"title of {slug}", repo=prefix, doc=doc, **extra)


def new_run(task_id: str, **extra: Any) -> NewRun:
    return NewRun(task_id=task_id, image="img:1", owner=None, worktrees_dir="/wt", **extra)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteCoordinator]:
    coordinator = SqliteCoordinator(tmp_path / "state" / "state.db")
    yield coordinator
    coordinator.close()


def raw(path: Path, sql: str) -> list[tuple[Any, ...]]:
    db = sqlite3.connect(str(path))
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


# -- migrations --------------------------------------------------------------------------------


def test_a_fresh_store_is_at_the_current_schema_version_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "dir" / "state.db"  # parents are created
    SqliteCoordinator(path).close()
    assert raw(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert raw(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in raw(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"id_counters", "tasks", "transitions", "runs", "run_events", "schema_version"} <= tables


def test_reopening_a_current_store_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    with SqliteCoordinator(path) as store:
        task = store.create_task(new_task())
    schema_before = raw(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name")
    cookie_before = raw(path, "PRAGMA schema_version")  # SQLite bumps it on any DDL
    for _ in range(3):
        with SqliteCoordinator(path) as store:
            assert store.get_task(task.id) == task
    assert raw(path, "SELECT type, name, sql FROM sqlite_master ORDER BY name") == schema_before
    assert raw(path, "PRAGMA schema_version") == cookie_before
    assert raw(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_version_1_store_is_migrated_and_keeps_its_tasks(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(str(path))
    for statement in MIGRATIONS[0]:
        db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (1)")
    now = "2026-01-01T00:00:00+00:00"
    db.execute("INSERT INTO id_counters VALUES ('old', 7)")
    db.execute(
        "INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, image, command, status,"
        " queued, version, doc, created_at, updated_at) VALUES ('old-7-x', 'old', 7, 'x', 'Old', 'old', NULL,"
        " 'HEAD', NULL, '[]', 'verifying', 0, 3, ?, ?, ?)",
        (json.dumps({"id": "old-7-x", "status": "verifying"}), now, now),
    )
    db.commit()
    db.close()

    with SqliteCoordinator(path) as store:
        old = store.get_task("old-7-x")
        assert (old.status, old.version, old.origin, old.file_path) == (TaskStatus.VERIFYING, 3, "launcher", None)
        # The counter survived the migration: the next number follows the old ones.
        assert store.create_task(new_task(prefix="old")).number == 8
    assert raw(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


def test_a_store_from_a_newer_launcher_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteCoordinator(path).close()
    db = sqlite3.connect(str(path))
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StateStoreError) as caught:
        SqliteCoordinator(path)
    assert f"schema version {SCHEMA_VERSION + 1}, newer than this launcher understands" in caught.value.message
    assert caught.value.hint == "upgrade launcher"
    assert raw(path, "SELECT version FROM schema_version") == [(SCHEMA_VERSION + 1,)]


# -- a damaged state file ----------------------------------------------------------------------

GARBAGE = {
    "random-bytes": random.Random(7).randbytes(4096),
    "text": b"this is not a database\n" * 50,
    "short": b"garbage",
    "zero-page": b"\x00" * 4096,
    "sqlite-magic-then-garbage": b"SQLite format 3\x00" + random.Random(3).randbytes(4080),
}


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
def test_a_corrupt_state_file_is_a_state_store_error_and_stays_untouched(tmp_path: Path, garbage: bytes) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(garbage)
    with pytest.raises(StateStoreError) as caught:
        SqliteCoordinator(path)
    assert f"the state store {path} is corrupt or not a launcher database" in caught.value.message
    assert "untouched" in (caught.value.hint or "")
    assert path.read_bytes() == garbage


@pytest.mark.parametrize("garbage", GARBAGE.values(), ids=GARBAGE.keys())
@pytest.mark.parametrize("command", [["task", "list"], ["task", "show", "demo-1"], ["init"]], ids=" ".join)
def test_the_cli_reports_a_corrupt_state_file_with_exit_code_7(
    case_root: Path, garbage: bytes, command: list[str]
) -> None:
    state = case_root / ".launcher" / "state.db"
    state.parent.mkdir()
    state.write_bytes(garbage)
    result = invoke(["--root", str(case_root), *command])
    assert result.exit_code == ExitCode.STATE_STORE, result.stderr
    assert f"launcher: error: the state store {state} is corrupt or not a launcher database" in result.stderr
    assert "hint: launcher left it untouched" in result.stderr
    assert "Traceback" not in result.stderr
    assert state.read_bytes() == garbage


def test_the_cli_json_error_names_the_state_store_code(case_root: Path) -> None:
    state = case_root / ".launcher" / "state.db"
    state.parent.mkdir()
    state.write_bytes(GARBAGE["text"])
    result = invoke(["--root", str(case_root), "task", "list", "--json"])
    assert result.exit_code == ExitCode.STATE_STORE
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "state-store"
    assert "corrupt or not a launcher database" in error["message"]


# -- unknown IDs and the short form -----------------------------------------------------------


def test_unknown_ids_are_not_found(store: SqliteCoordinator) -> None:
    store.create_task(new_task())
    calls = {
        "get_task": lambda: store.get_task("demo-9-nope"),
        "resolve_task": lambda: store.resolve_task("demo-9"),
        "history": lambda: store.history("demo-9-nope"),
        "transition": lambda: store.transition(
            "demo-9-nope", TaskStatus.ACTIVE, TaskStatus.IMPLEMENTING, reason=None, actor="t"
        ),
        "update_task_doc": lambda: store.update_task_doc("demo-9-nope", 1, {}, actor="t"),
        "get_run": lambda: store.get_run("demo-9.1"),
        "create_run": lambda: store.create_run(new_run("demo-9-nope")),
        "update_run": lambda: store.update_run("demo-9.1", state=RunState.RUNNING),
    }
    for name, call in calls.items():
        with pytest.raises(NotFoundError) as caught:
            call()
        assert "demo-9" in caught.value.message, name
        assert caught.value.exit_code == ExitCode.NOT_FOUND


def test_short_form_resolves_to_the_task_with_that_number(store: SqliteCoordinator) -> None:
    first = store.create_task(new_task(slug="first"))
    second = store.create_task(new_task(slug="second"))
    dashed = store.create_task(new_task(prefix="my-repo", slug="x"))
    assert store.resolve_task("demo-2") == second
    assert store.resolve_task("demo-1") == first
    assert store.resolve_task(second.id) == second
    assert store.resolve_task("my-repo-1") == dashed
    for missing in ["demo-3", "demo-0", "demo", "demo-", "-1", "other-1", "demo-1-firs", "demo-1-first-x"]:
        with pytest.raises(NotFoundError):
            store.resolve_task(missing)


@pytest.mark.parametrize(
    "ref",
    ["demo-²", "demo-" + "9" * 30],
    ids=["superscript-digit", "huge-number"],
)
def test_odd_short_forms_are_not_found_rather_than_crashing(store: SqliteCoordinator, ref: str) -> None:
    """`str.isdigit` accepts '²' (int() then raises ValueError) and any length (SQLite then
    raises OverflowError); neither is a LauncherError, so the CLI died with a traceback."""
    store.create_task(new_task())
    with pytest.raises(NotFoundError):
        store.resolve_task(ref)


@pytest.mark.parametrize("ref", ["demo-²", "demo-" + "9" * 30])
def test_cli_show_of_an_odd_short_form_exits_5(case_root: Path, ref: str) -> None:
    result = invoke(["--root", str(case_root), "task", "show", ref])
    assert result.exit_code == ExitCode.NOT_FOUND, result.stderr


# -- ID allocation -----------------------------------------------------------------------------


def test_numbers_are_per_prefix_and_never_reused(store: SqliteCoordinator) -> None:
    ids = [store.create_task(new_task(prefix=p, slug="s")).id for p in ["a", "b", "a", "a", "b"]]
    assert ids == ["a-1-s", "b-1-s", "a-2-s", "a-3-s", "b-2-s"]
    doc = store.get_task("a-2-s").doc
    assert doc["id"] == "a-2-s"
    assert doc["status"] == "active"
    assert [(h.from_status, h.to_status, h.reason) for h in store.history("a-2-s")] == [
        (None, TaskStatus.ACTIVE, "created")
    ]


def test_a_failed_transaction_leaves_nothing_behind(store: SqliteCoordinator) -> None:
    """create_task is one transaction: if its last statement fails, the number is not used up."""
    store.create_task(new_task(slug="one"))
    raw(
        store.path,
        "CREATE TRIGGER boom BEFORE INSERT ON transitions WHEN NEW.task_id = 'demo-2-two' "
        "BEGIN SELECT RAISE(ABORT, 'boom'); END",
    )
    with pytest.raises((sqlite3.DatabaseError, StateStoreError)):
        store.create_task(new_task(slug="two"))
    raw(store.path, "DROP TRIGGER boom")
    assert [t.id for t in store.list_tasks()] == ["demo-1-one"]
    assert store.create_task(new_task(slug="three")).id == "demo-2-three"


# -- runs: create, CAS updates, details merge --------------------------------------------------


def test_runs_get_attempts_per_task_and_a_global_sequence(store: SqliteCoordinator) -> None:
    a = store.create_task(new_task(slug="a"))
    b = store.create_task(new_task(slug="b"))
    r1 = store.create_run(new_run(a.id, details={"base": "abc"}))
    r2 = store.create_run(new_run(b.id))
    r3 = store.create_run(new_run(a.id))
    assert [(r.id, r.attempt, r.seq) for r in (r1, r2, r3)] == [
        ("demo-1.1", 1, 1),
        ("demo-2.1", 1, 2),
        ("demo-1.2", 2, 3),
    ]
    assert r1.state == RunState.CREATED
    assert r1.branch == f"launcher/{a.id}/1"
    assert r3.branch == f"launcher/{a.id}/2"
    assert r1.worktree == "/wt/demo-1.1"
    assert r1.details.model_dump(mode="json") == {"base": "abc"}
    assert [r.id for r in store.list_runs(task_id=a.id)] == ["demo-1.1", "demo-1.2"]
    assert [(e.from_state, e.to_state) for e in store.run_events(r1.id)] == [(None, RunState.CREATED)]


def test_update_run_is_a_compare_and_set_on_the_state(store: SqliteCoordinator) -> None:
    task = store.create_task(new_task())
    run = store.create_run(new_run(task.id))
    owner = RunOwner(host="box", pid=4242, start_ticks=99)
    started = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    moved = store.update_run(
        run.id,
        expected={RunState.CREATED},
        state=RunState.PREPARING,
        detail="worktree",
        owner=owner,
        started_at=started,
        uid=20001,
    )
    assert (moved.state, moved.owner, moved.started_at, moved.uid) == (RunState.PREPARING, owner, started, 20001)

    with pytest.raises(TransitionConflictError) as caught:
        store.update_run(run.id, expected={RunState.CREATED}, state=RunState.RUNNING, container_id="c1")
    assert caught.value.actual == "preparing"
    assert caught.value.expected == "created"
    assert f"run {run.id} is preparing, not created" in caught.value.message
    unchanged = store.get_run(run.id)
    assert unchanged.state == RunState.PREPARING
    assert unchanged.container_id is None  # a lost CAS changes nothing at all

    with pytest.raises(TransitionConflictError) as caught:
        store.update_run(run.id, expected=[RunState.RUNNING, RunState.EXITED], state=RunState.FAILED)
    assert caught.value.expected == "exited|running"

    store.update_run(run.id, expected=[RunState.PREPARING, RunState.CREATED], state=RunState.RUNNING)
    store.update_run(run.id, exit_code=0)  # no state change, no event
    store.update_run(run.id, state=RunState.EXITED, exit_code=0, detail="agent exited 0")
    events = [(e.from_state, e.to_state, e.detail) for e in store.run_events(run.id)]
    assert events == [
        (None, RunState.CREATED, None),
        (RunState.CREATED, RunState.PREPARING, "worktree"),
        (RunState.PREPARING, RunState.RUNNING, None),
        (RunState.RUNNING, RunState.EXITED, "agent exited 0"),
    ]
    assert [r.id for r in store.list_runs(states=[RunState.EXITED])] == [run.id]
    assert store.list_runs(states=[RunState.RUNNING]) == []


def test_update_run_refuses_unknown_fields(store: SqliteCoordinator) -> None:
    task = store.create_task(new_task())
    run = store.create_run(new_run(task.id))
    with pytest.raises(ValueError, match="unknown run fields"):
        store.update_run(run.id, state=RunState.RUNNING, id="hijack")
    assert store.get_run(run.id).state == RunState.CREATED


def test_run_details_merge_rather_than_replace(store: SqliteCoordinator) -> None:
    task = store.create_task(new_task())
    run = store.create_run(new_run(task.id, details={"base": "abc", "note": "first"}))
    store.update_run(run.id, details={"harvest": {"commits": 2}})
    store.update_run(run.id, details={"note": "second"})
    assert store.get_run(run.id).details.model_dump(mode="json") == {
        "base": "abc",
        "note": "second",
        "harvest": {"commits": 2},
    }


# -- task documents ----------------------------------------------------------------------------


def test_update_task_doc_is_a_compare_and_set_on_the_version(store: SqliteCoordinator) -> None:
    task = store.create_task(new_task())
    doc = {**task.doc, "tested": True}
    updated = store.update_task_doc(task.id, task.version, doc, actor="t")
    assert updated.doc["tested"] is True
    assert updated.version == task.version + 1
    with pytest.raises(TransitionConflictError) as caught:
        store.update_task_doc(task.id, task.version, {**doc, "prUrl": "x"}, actor="t")
    assert caught.value.actual == str(updated.version)
    assert store.get_task(task.id).doc == doc

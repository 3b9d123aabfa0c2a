"""One schema for both backends: the same tables, columns, keys and indexes after migration, and
stores made by earlier launchers (SQLite and PostgreSQL at version 4) migrating cleanly."""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from pathlib import Path
from typing import Any

import psycopg
from pg import pg_url

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.adapters.store import postgres as pg_store
from launcher.adapters.store import sqlite as sqlite_store
from launcher.core.transitions import RunState, TaskStatus
from launcher.models import NewTask

__all__ = ["pg_url"]

Shape = dict[str, Any]


def sqlite_shape(path: Path) -> Shape:
    db = sqlite3.connect(str(path))
    try:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
            )
        ]
        columns, keys, foreign = {}, {}, set()
        for table in tables:
            info = db.execute(f"PRAGMA table_info({table})").fetchall()  # cid, name, type, notnull, default, pk
            # SQLite lets a non-INTEGER primary key hold NULL; PostgreSQL does not: a key column counts as NOT NULL.
            columns[table] = [(name, bool(notnull or pk)) for _, name, _, notnull, _, pk in info]
            primary = tuple(row[1] for row in sorted((r for r in info if r[5]), key=lambda r: r[5]))
            table_keys = {primary} if primary else set()
            for _, index, unique, origin, _ in db.execute(f"PRAGMA index_list({table})"):
                if unique and origin in ("pk", "u"):
                    table_keys.add(tuple(r[2] for r in db.execute(f"PRAGMA index_info({index})")))
            keys[table] = table_keys
            for row in db.execute(f"PRAGMA foreign_key_list({table})"):  # id, seq, table, from, to, ...
                foreign.add((table, row[3], row[2], row[4]))
        indexes = {}
        for name, table in db.execute(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
        ):
            indexes[name] = (table, tuple(r[2] for r in db.execute(f"PRAGMA index_info({name})")))
        return {"tables": tables, "columns": columns, "keys": keys, "foreign": foreign, "indexes": indexes}
    finally:
        db.close()


def postgres_shape(url: str) -> Shape:
    with psycopg.connect(url) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() "
                "AND table_type = 'BASE TABLE' ORDER BY table_name COLLATE \"C\""
            )
        ]
        columns: dict[str, list[tuple[str, bool]]] = defaultdict(list)
        for table, name, nullable in conn.execute(
            "SELECT table_name, column_name, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ):
            columns[table].append((name, nullable == "NO"))
        attribute = (
            "(SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest({keys}) WITH ORDINALITY AS k(attnum, ord) "
            "JOIN pg_attribute a ON a.attrelid = {rel} AND a.attnum = k.attnum)"
        )
        keys: dict[str, set[tuple[str, ...]]] = defaultdict(set)
        foreign = set()
        for table, kind, cols, ref_table, ref_cols in conn.execute(
            "SELECT c.conrelid::regclass::text, c.contype, "
            + attribute.format(keys="c.conkey", rel="c.conrelid")
            + ", c.confrelid::regclass::text, "
            + attribute.format(keys="c.confkey", rel="c.confrelid")
            + " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace "
            "WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')"
        ):
            if kind == "f":
                foreign.add((table, cols[0], ref_table, ref_cols[0]))
            else:
                keys[table].add(tuple(cols))
        indexes = {}
        for name, table, cols in conn.execute(
            "SELECT i.indexname, i.tablename, "
            + attribute.format(keys="x.indkey::int2[]", rel="x.indrelid")
            + " FROM pg_indexes i JOIN pg_class ic ON ic.relname = i.indexname "
            "JOIN pg_namespace n ON n.oid = ic.relnamespace AND n.nspname = i.schemaname "
            "JOIN pg_index x ON x.indexrelid = ic.oid "
            "WHERE i.schemaname = current_schema() "
            "AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = ic.oid)"
        ):
            indexes[name] = (table, tuple(cols))
        return {
            "tables": tables,
            "columns": dict(columns),
            "keys": {table: keys[table] for table in tables},
            "foreign": foreign,
            "indexes": indexes,
        }


def schema_version(url: str) -> int:
    if url.startswith("sqlite:///"):
        db = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            return int(db.execute("SELECT version FROM schema_version").fetchone()[0])
        finally:
            db.close()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        assert row is not None
        return int(row[0])


def test_both_backends_end_with_the_same_tables_columns_keys_and_indexes(tmp_path: Path, pg_url: str) -> None:
    lite = tmp_path / "state.db"
    open_coordinator(sqlite_url(lite)).close()
    open_coordinator(pg_url).close()
    from_sqlite, from_postgres = sqlite_shape(lite), postgres_shape(pg_url)
    assert from_sqlite == from_postgres
    # What the comparison is about, so that it cannot pass by both being empty.
    assert "run_events_run" in from_sqlite["indexes"]
    assert from_sqlite["indexes"]["run_events_run"] == ("run_events", ("run_id", "seq"))
    assert set(from_sqlite["indexes"]) == {
        "tasks_status",
        "tasks_queue",
        "transitions_task",
        "runs_state",
        "run_events_run",
    }
    assert len(from_sqlite["tables"]) == 8


def test_both_backends_migrate_to_the_same_version(tmp_path: Path, pg_url: str) -> None:
    url = sqlite_url(tmp_path / "state.db")
    open_coordinator(url).close()
    open_coordinator(pg_url).close()
    assert schema_version(url) == schema_version(pg_url) == sqlite_store.SCHEMA_VERSION == pg_store.SCHEMA_VERSION
    assert sqlite_store.SCHEMA_VERSION == len(sqlite_store.MIGRATIONS) == len(pg_store.MIGRATIONS) == 7


NOW = "2026-01-01T00:00:00+00:00"


def new_task(prefix: str) -> NewTask:
    return NewTask(prefix=prefix, slug="s", title="t", repo=prefix, doc={"status": "active"})


def test_a_version_4_sqlite_store_gains_the_run_events_index_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    db = sqlite3.connect(str(path))
    # Exactly what launcher wrote up to version 4 (its statements are unchanged).
    for statements in sqlite_store.MIGRATIONS[:4]:
        for statement in statements:
            db.execute(statement)
    db.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    db.execute("INSERT INTO schema_version VALUES (4)")
    db.execute("INSERT INTO id_counters VALUES ('old', 7)")
    db.execute(
        "INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, image, command, status,"
        " queued, version, doc, created_at, updated_at, queued_at, claims) VALUES ('old-7-x', 'old', 7, 'x', 'Old',"
        " 'old', NULL, 'HEAD', NULL, '[]', 'implementing', 1, 2, ?, ?, ?, ?, 0)",
        (json.dumps({"id": "old-7-x", "status": "implementing"}), NOW, NOW, NOW),
    )
    db.execute(
        "INSERT INTO runs (id, seq, task_id, attempt, state, owner, branch, worktree, image, created_at, updated_at,"
        " details) VALUES ('old-7.1', 1, 'old-7-x', 1, 'running', NULL, 'launcher/old-7-x/1', '/w/old-7.1', NULL,"
        " ?, ?, ?)",
        (NOW, NOW, json.dumps({"base": "abc", "from_a_newer_step": {"kept": True}})),
    )
    db.execute(
        "INSERT INTO run_events (run_id, from_state, to_state, at) VALUES ('old-7.1', NULL, 'created', ?)", (NOW,)
    )
    db.execute(
        "INSERT INTO run_events (run_id, from_state, to_state, at) VALUES ('old-7.1', 'created', 'running', ?)", (NOW,)
    )
    db.execute("INSERT INTO subnet_leases VALUES (3, 'old-7.1', ?)", (NOW,))
    db.commit()
    db.close()
    assert "run_events_run" not in sqlite_shape(path)["indexes"]

    with sqlite_store.SqliteCoordinator(path) as store:
        task = store.get_task("old-7-x")
        assert (task.status, task.version, task.queued) == (TaskStatus.IMPLEMENTING, 2, True)
        assert [e.to_state for e in store.run_events("old-7.1")] == [RunState.CREATED, RunState.RUNNING]
        assert store.subnet_leases() == {3: "old-7.1"}
        merged = store.update_run("old-7.1", expected=[RunState.RUNNING], details={"harvest_note": "done"})
        assert merged.id == "old-7.1"
        assert store.create_task(new_task("old")).number == 8
        assert store.claim_next("w", 60) is not None
    assert schema_version(sqlite_url(path)) == sqlite_store.SCHEMA_VERSION
    # The raw JSON merge kept every key, known or not.
    db = sqlite3.connect(str(path))
    try:
        (details,) = db.execute("SELECT details FROM runs WHERE id = 'old-7.1'").fetchone()
    finally:
        db.close()
    assert json.loads(details) == {"base": "abc", "from_a_newer_step": {"kept": True}, "harvest_note": "done"}
    shape = sqlite_shape(path)
    assert shape["indexes"]["run_events_run"] == ("run_events", ("run_id", "seq"))
    fresh = tmp_path / "fresh.db"
    open_coordinator(sqlite_url(fresh)).close()
    assert shape == sqlite_shape(fresh)


def test_a_version_4_postgres_store_keeps_its_index_and_moves_to_version_5(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url) as conn:
        # What launcher wrote up to version 4: the same statements plus version 1's own index.
        for statements in pg_store.MIGRATIONS[:4]:
            for statement in statements:
                conn.execute(statement)
        conn.execute("CREATE INDEX run_events_run ON run_events (run_id, seq)")
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (4)")
        conn.execute("INSERT INTO id_counters VALUES ('old', 7)")
    before = postgres_shape(pg_url)
    with open_coordinator(pg_url) as store:
        assert store.create_task(new_task("old")).number == 8
    assert schema_version(pg_url) == pg_store.SCHEMA_VERSION
    after = postgres_shape(pg_url)
    assert after["indexes"] == before["indexes"]
    lite = tmp_path / "state.db"
    open_coordinator(sqlite_url(lite)).close()
    assert after == sqlite_shape(lite)

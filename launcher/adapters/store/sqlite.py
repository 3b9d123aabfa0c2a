"""Embedded coordinator: SQLite in WAL mode, every write transaction BEGIN IMMEDIATE.

BEGIN IMMEDIATE takes SQLite's write lock up front, so two processes allocating IDs or
changing a status are serialised by the database itself (waiting up to the busy timeout)
instead of failing half-way with SQLITE_BUSY on the upgrade from a read lock.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launcher.adapters.locks import file_lock
from launcher.adapters.store.rows import run_from_row, task_from_row
from launcher.core.ports import Coordinator
from launcher.core.subnets import lowest_free_slot
from launcher.core.transitions import RunState, TaskStatus, check_legal
from launcher.errors import (
    InvalidInputError,
    LockTimeoutError,
    NotFoundError,
    StateStoreError,
    TransitionConflictError,
)
from launcher.models import (
    AdoptedTask,
    NewRun,
    NewTask,
    RunEventRecord,
    RunRecord,
    TaskRecord,
    TransitionRecord,
    iso,
    utcnow,
)

BUSY_TIMEOUT_S = 60.0

# Each entry upgrades the schema by one version; never edit a released entry, append.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE id_counters (
            prefix TEXT PRIMARY KEY,
            last_number INTEGER NOT NULL
        )""",
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            number INTEGER NOT NULL,
            slug TEXT NOT NULL,
            title TEXT NOT NULL,
            repo TEXT NOT NULL,
            repo_path TEXT,
            base_ref TEXT NOT NULL,
            image TEXT,
            command TEXT NOT NULL,
            status TEXT NOT NULL,
            queued INTEGER NOT NULL DEFAULT 0,
            version INTEGER NOT NULL,
            doc TEXT NOT NULL,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            UNIQUE (prefix, number)
        )""",
        "CREATE INDEX tasks_status ON tasks (status)",
        """CREATE TABLE transitions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            from_status TEXT,
            to_status TEXT NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL,
            at TEXT NOT NULL
        )""",
        "CREATE INDEX transitions_task ON transitions (task_id, seq)",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            seq INTEGER NOT NULL UNIQUE,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            attempt INTEGER NOT NULL,
            state TEXT NOT NULL,
            owner TEXT,
            branch TEXT NOT NULL,
            worktree TEXT NOT NULL,
            image TEXT,
            container_id TEXT,
            exit_code INTEGER,
            uid INTEGER,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            started_at TEXT,
            ended_at TEXT,
            details TEXT NOT NULL,
            UNIQUE (task_id, attempt)
        )""",
        "CREATE INDEX runs_state ON runs (state)",
        """CREATE TABLE run_events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            run_id TEXT NOT NULL REFERENCES runs (id),
            from_state TEXT,
            to_state TEXT NOT NULL,
            at TEXT NOT NULL,
            detail TEXT
        )""",
    ],
    [
        # v2: task files launcher adopted from a case harness keep their own path, and every
        # file's last known content hash tells a hand edit from launcher's own writes.
        "ALTER TABLE tasks ADD COLUMN file_path TEXT",
        "ALTER TABLE tasks ADD COLUMN file_sha256 TEXT",
        "ALTER TABLE tasks ADD COLUMN origin TEXT NOT NULL DEFAULT 'launcher'",
    ],
    [
        # v3: the queue. A claim is a lease (owner + expiry on the coordinator's clock), renewed
        # while the run lives; an expired lease may be claimed again by another batch.
        "ALTER TABLE tasks ADD COLUMN queued_at TEXT",
        "ALTER TABLE tasks ADD COLUMN lease_owner TEXT",
        "ALTER TABLE tasks ADD COLUMN lease_expires REAL",
        "ALTER TABLE tasks ADD COLUMN claims INTEGER NOT NULL DEFAULT 0",
        "UPDATE tasks SET queued_at = created_at WHERE queued = 1",
        "CREATE INDEX tasks_queue ON tasks (queued, queued_at)",
    ],
    [
        # v4: run-network subnet slots; the primary key makes a slot impossible to hold twice.
        """CREATE TABLE subnet_leases (
            slot INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            leased_at TEXT NOT NULL
        )""",
    ],
]
SCHEMA_VERSION = len(MIGRATIONS)

_RUN_COLUMNS = {
    "owner",
    "branch",
    "worktree",
    "image",
    "container_id",
    "exit_code",
    "uid",
    "cancel_requested",
    "started_at",
    "ended_at",
    "details",
}


class SqliteCoordinator(Coordinator):
    def __init__(self, path: Path) -> None:
        self.path = path
        self._write_lock = path.with_name(f".{path.name}.write.lock")
        # One connection, shareable between threads (a run prepares its worktree and its
        # network at once): a transaction must not take in another thread's statements.
        self._thread_lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite does not wait out its busy timeout while switching a new file to WAL, so
            # two processes opening a fresh store at once would fail: serialise the opening.
            with file_lock(path.with_name(f".{path.name}.open.lock"), timeout=BUSY_TIMEOUT_S):
                self._open(path)
        except sqlite3.DatabaseError as exc:
            raise self._store_error(exc) from exc
        except OSError as exc:
            raise StateStoreError(
                f"cannot open the state store at {path}: {exc.strerror or exc}",
                hint="check that the case root is writable, or pass --state-url",
            ) from exc

    def _open(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = self._switch_to_wal()
        if mode.lower() != "wal":
            raise StateStoreError(f"{path}: SQLite refused WAL mode (got {mode})")
        # FULL: a task file is written only after its commit is durable, so a crash
        # can never leave a file whose ID the database will hand out again.
        self._db.execute("PRAGMA synchronous = FULL")
        self._db.execute("PRAGMA foreign_keys = ON")
        self._migrate()

    def _switch_to_wal(self) -> str:
        """PRAGMA journal_mode = WAL, waiting out a writer that is not launcher.

        On a file still in rollback mode SQLite fails this at once with "database is locked"
        instead of calling its busy handler, so the wait is done here, on a deadline.
        """
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        delay = 0.005
        while True:
            try:
                return str(self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0])
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.1)

    def _store_error(self, exc: sqlite3.Error) -> StateStoreError:
        text = str(exc)
        if "not a database" in text or "malformed" in text:
            return StateStoreError(
                f"the state store {self.path} is corrupt or not a launcher database ({text})",
                hint="launcher left it untouched; restore it from a backup or move it aside to start afresh",
            )
        if "readonly" in text or "unable to open" in text:
            return StateStoreError(
                f"cannot write the state store {self.path} ({text})",
                hint="check permissions of the case root and its .launcher folder",
            )
        if "locked" in text or "busy" in text:
            return StateStoreError(
                f"the state store {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f}s ({text})",
                hint="another launcher process holds a long transaction; retry",
            )
        return StateStoreError(f"state store {self.path}: {text}")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # Writers queue on a file lock first: SQLite's own busy handler sleeps up to 100 ms
        # between tries, so 16 contending processes spend most of their time asleep. The
        # lock is polled at ≤ 2 ms; BEGIN IMMEDIATE and the busy timeout stay the safety net
        # for writers that do not take it (another tool, an older launcher).
        try:
            with (
                self._thread_lock,
                file_lock(self._write_lock, timeout=BUSY_TIMEOUT_S, max_delay=0.002),
                self._transaction() as db,
            ):
                yield db
        except LockTimeoutError as exc:
            raise StateStoreError(
                f"the state store {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f}s",
                hint="another launcher process holds a long transaction; retry",
            ) from exc

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc
        try:
            yield self._db
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            raise self._store_error(exc) from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise self._store_error(exc) from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            with self._thread_lock:
                return self._db.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc

    def _migrate(self) -> None:
        with self._write() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            current = row[0] if row else 0
            if current > SCHEMA_VERSION:
                raise StateStoreError(
                    f"the state store {self.path} has schema version {current}, newer than this "
                    f"launcher understands ({SCHEMA_VERSION})",
                    hint="upgrade launcher",
                )
            for statements in MIGRATIONS[current:]:
                for statement in statements:
                    db.execute(statement)
            if row is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif current != SCHEMA_VERSION:
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

    # -- tasks ---------------------------------------------------------------------------

    def create_task(self, new: NewTask) -> TaskRecord:
        now = iso(utcnow())
        with self._write() as db:
            db.execute(
                "INSERT INTO id_counters (prefix, last_number) VALUES (?, 0) ON CONFLICT DO NOTHING",
                (new.prefix,),
            )
            number = db.execute(
                "UPDATE id_counters SET last_number = last_number + 1 WHERE prefix = ? RETURNING last_number",
                (new.prefix,),
            ).fetchone()[0]
            task_id = f"{new.prefix}-{number}-{new.slug}"
            doc = {"id": task_id, **{k: v for k, v in new.doc.items() if k != "id"}}
            status = TaskStatus(doc.get("status", TaskStatus.ACTIVE.value))
            doc["status"] = status.value
            db.execute(
                """INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, image,
                   command, status, queued, version, doc, created_at, updated_at, queued_at)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)""",
                (
                    task_id,
                    new.prefix,
                    number,
                    new.slug,
                    new.title,
                    new.repo,
                    new.repo_path,
                    new.base_ref,
                    new.image,
                    json.dumps(new.command),
                    status.value,
                    int(new.queued),
                    json.dumps(doc),
                    now,
                    now,
                    now if new.queued else None,
                ),
            )
            db.execute(
                "INSERT INTO transitions (task_id, from_status, to_status, reason, actor, at) "
                "VALUES (?, NULL, ?, 'created', ?, ?)",
                (task_id, status.value, "launcher", now),
            )
            return self._task_row(db, task_id)

    def _task_row(self, db: sqlite3.Connection, task_id: str) -> TaskRecord:
        row = db.execute("SELECT * FROM tasks WHERE id = ?", (task_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no task {task_id!r}", hint="`launcher task list` shows the known tasks")
        return task_from_row(row)

    def get_task(self, task_id: str) -> TaskRecord:
        rows = self._read("SELECT * FROM tasks WHERE id = ?", (task_id,))
        if not rows:
            raise NotFoundError(f"no task {task_id!r}", hint="`launcher task list` shows the known tasks")
        return task_from_row(rows[0])

    def resolve_task(self, ref: str) -> TaskRecord:
        rows = self._read("SELECT * FROM tasks WHERE id = ?", (ref,))
        if rows:
            return task_from_row(rows[0])
        prefix, _, number = ref.rpartition("-")
        if prefix and number.isascii() and number.isdigit() and len(number) < 12:
            rows = self._read("SELECT * FROM tasks WHERE prefix = ? AND number = ?", (prefix, int(number)))
            if rows:
                return task_from_row(rows[0])
        raise NotFoundError(f"no task {ref!r}", hint="`launcher task list` shows the known tasks")

    def list_tasks(self, status: TaskStatus | None = None) -> list[TaskRecord]:
        if status is None:
            rows = self._read("SELECT * FROM tasks ORDER BY prefix, number")
        else:
            rows = self._read("SELECT * FROM tasks WHERE status = ? ORDER BY prefix, number", (status.value,))
        return [task_from_row(r) for r in rows]

    def transition(
        self, task_id: str, expected: TaskStatus, target: TaskStatus, *, reason: str | None, actor: str
    ) -> tuple[TaskRecord, TransitionRecord]:
        with self._write() as db:
            current = self._task_row(db, task_id)
            if current.status != expected:
                raise TransitionConflictError(
                    f"task {task_id} is {current.status.value}, not {expected.value}: someone else changed it first",
                    actual=current.status.value,
                    expected=expected.value,
                )
            check_legal(current.status, target)
            moment = utcnow()
            now = iso(moment)
            doc = dict(current.doc)
            doc["status"] = target.value
            db.execute(
                "UPDATE tasks SET status = ?, doc = ?, version = version + 1, updated_at = ? WHERE id = ?",
                (target.value, json.dumps(doc), now, task_id),
            )
            seq = db.execute(
                "INSERT INTO transitions (task_id, from_status, to_status, reason, actor, at) "
                "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq",
                (task_id, expected.value, target.value, reason, actor, now),
            ).fetchone()[0]
            record = TransitionRecord(
                seq=seq,
                task_id=task_id,
                from_status=expected,
                to_status=target,
                reason=reason,
                actor=actor,
                at=moment,
            )
            return self._task_row(db, task_id), record

    def adopt_task(self, task: AdoptedTask) -> TaskRecord:
        now = iso(utcnow())
        with self._write() as db:
            if db.execute("SELECT 1 FROM tasks WHERE id = ?", (task.id,)).fetchone():
                raise TransitionConflictError(f"task {task.id} is already known", actual="known", expected="new")
            clash = db.execute(
                "SELECT id FROM tasks WHERE prefix = ? AND number = ?", (task.prefix, task.number)
            ).fetchone()
            if clash:
                raise InvalidInputError(
                    f"task file {task.file_path} ({task.id}) reuses number {task.number} of {clash[0]}",
                    hint="give one of them a new number; launcher never hands a number out twice",
                )
            self._reserve(db, task.prefix, task.number)
            status = TaskStatus(task.doc["status"])
            db.execute(
                """INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, image,
                   command, status, queued, version, doc, created_at, updated_at, file_path, file_sha256, origin)
                   VALUES (?, ?, ?, ?, ?, ?, ?, 'HEAD', NULL, '[]', ?, 0, 1, ?, ?, ?, ?, ?, 'adopted')""",
                (
                    task.id,
                    task.prefix,
                    task.number,
                    task.slug,
                    task.title,
                    task.repo,
                    task.repo_path,
                    status.value,
                    json.dumps(task.doc),
                    now,
                    now,
                    task.file_path,
                    task.file_sha256,
                ),
            )
            db.execute(
                "INSERT INTO transitions (task_id, from_status, to_status, reason, actor, at) "
                "VALUES (?, NULL, ?, ?, 'launcher', ?)",
                (task.id, status.value, f"adopted from {task.file_path}", now),
            )
            return self._task_row(db, task.id)

    def reserve_numbers(self, prefix: str, number: int) -> None:
        with self._write() as db:
            self._reserve(db, prefix, number)

    @staticmethod
    def _reserve(db: sqlite3.Connection, prefix: str, number: int) -> None:
        db.execute(
            "INSERT INTO id_counters (prefix, last_number) VALUES (?, ?) "
            "ON CONFLICT (prefix) DO UPDATE SET last_number = MAX(last_number, excluded.last_number)",
            (prefix, number),
        )

    def task_file_paths(self) -> set[str]:
        return {r[0] for r in self._read("SELECT file_path FROM tasks WHERE file_path IS NOT NULL")}

    def record_file(self, task_id: str, path: str, sha256: str) -> None:
        with self._write() as db:
            db.execute("UPDATE tasks SET file_path = ?, file_sha256 = ? WHERE id = ?", (path, sha256, task_id))

    def import_external_change(self, task_id: str, doc: dict[str, Any], sha256: str) -> TaskRecord:
        with self._write() as db:
            current = self._task_row(db, task_id)
            status = TaskStatus(doc["status"])
            now = iso(utcnow())
            db.execute(
                "UPDATE tasks SET doc = ?, status = ?, file_sha256 = ?, version = version + 1, updated_at = ? "
                "WHERE id = ?",
                (json.dumps(doc), status.value, sha256, now, task_id),
            )
            if status != current.status:
                db.execute(
                    "INSERT INTO transitions (task_id, from_status, to_status, reason, actor, at) "
                    "VALUES (?, ?, ?, 'task file changed outside launcher', 'external', ?)",
                    (task_id, current.status.value, status.value, now),
                )
            return self._task_row(db, task_id)

    def update_task_doc(self, task_id: str, expected_version: int, doc: dict[str, Any], *, actor: str) -> TaskRecord:
        with self._write() as db:
            current = self._task_row(db, task_id)
            if current.version != expected_version:
                raise TransitionConflictError(
                    f"task {task_id} changed since version {expected_version} (now {current.version})",
                    actual=str(current.version),
                    expected=str(expected_version),
                )
            if doc.get("id") != task_id or doc.get("status") != current.status.value:
                raise InvalidInputError("a task document update may not change its id or status")
            db.execute(
                "UPDATE tasks SET doc = ?, version = version + 1, updated_at = ? WHERE id = ?",
                (json.dumps(doc), iso(utcnow()), task_id),
            )
            return self._task_row(db, task_id)

    # -- the queue -----------------------------------------------------------------------

    def enqueue(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        now = iso(utcnow())
        with self._write() as db:
            queued = []
            for task_id in task_ids:
                self._task_row(db, task_id)
                db.execute(
                    "UPDATE tasks SET queued = 1, queued_at = ?, lease_owner = NULL, lease_expires = NULL, "
                    "updated_at = ? WHERE id = ?",
                    (now, now, task_id),
                )
                queued.append(self._task_row(db, task_id))
            return queued

    def claim_next(self, owner: str, lease_seconds: float) -> TaskRecord | None:
        with self._write() as db:
            now = time.time()
            row = db.execute(
                "SELECT id FROM tasks WHERE queued = 1 AND (lease_owner IS NULL OR lease_expires < ?) "
                "ORDER BY queued_at, prefix, number LIMIT 1",
                (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE tasks SET lease_owner = ?, lease_expires = ?, claims = claims + 1 WHERE id = ?",
                (owner, now + lease_seconds, row[0]),
            )
            return self._task_row(db, row[0])

    def renew_lease(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET lease_expires = ? WHERE id = ? AND lease_owner = ?",
                (time.time() + lease_seconds, task_id, owner),
            )
            return cursor.rowcount == 1

    def release_claim(self, task_id: str, owner: str, *, done: bool) -> bool:
        with self._write() as db:
            cursor = db.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL, "
                "queued = CASE WHEN ? THEN 0 ELSE queued END, updated_at = ? WHERE id = ? AND lease_owner = ?",
                (int(done), iso(utcnow()), task_id, owner),
            )
            return cursor.rowcount == 1

    def history(self, task_id: str) -> list[TransitionRecord]:
        self.get_task(task_id)
        rows = self._read("SELECT * FROM transitions WHERE task_id = ? ORDER BY seq", (task_id,))
        return [
            TransitionRecord(
                seq=r["seq"],
                task_id=r["task_id"],
                from_status=r["from_status"],
                to_status=r["to_status"],
                reason=r["reason"],
                actor=r["actor"],
                at=r["at"],
            )
            for r in rows
        ]

    # -- runs ----------------------------------------------------------------------------

    def create_run(self, new: NewRun) -> RunRecord:
        now = iso(utcnow())
        with self._write() as db:
            task = self._task_row(db, new.task_id)
            attempt = db.execute(
                "SELECT COALESCE(MAX(attempt), 0) + 1 FROM runs WHERE task_id = ?", (task.id,)
            ).fetchone()[0]
            seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM runs").fetchone()[0]
            run_id = f"{task.prefix}-{task.number}.{attempt}"
            branch = f"launcher/{task.id}/{attempt}"
            worktree = str(Path(new.worktrees_dir) / run_id)
            db.execute(
                """INSERT INTO runs (id, seq, task_id, attempt, state, owner, branch, worktree, image,
                   created_at, updated_at, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    run_id,
                    seq,
                    task.id,
                    attempt,
                    RunState.CREATED.value,
                    new.owner.model_dump_json() if new.owner else None,
                    branch,
                    worktree,
                    new.image,
                    now,
                    now,
                    json.dumps(new.details),
                ),
            )
            db.execute(
                "INSERT INTO run_events (run_id, from_state, to_state, at, detail) VALUES (?, NULL, ?, ?, NULL)",
                (run_id, RunState.CREATED.value, now),
            )
            return self._run_row(db, run_id)

    def _run_row(self, db: sqlite3.Connection, run_id: str) -> RunRecord:
        row = db.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}", hint="`launcher ps --all` shows the known runs")
        return run_from_row(row)

    def get_run(self, run_id: str) -> RunRecord:
        rows = self._read("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            raise NotFoundError(f"no run {run_id!r}", hint="`launcher ps --all` shows the known runs")
        return run_from_row(rows[0])

    def list_runs(self, *, states: Iterable[RunState] | None = None, task_id: str | None = None) -> list[RunRecord]:
        sql, params = "SELECT * FROM runs WHERE 1 = 1", []
        if states is not None:
            wanted = [s.value for s in states]
            sql += f" AND state IN ({', '.join('?' * len(wanted))})"
            params.extend(wanted)
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)
        return [run_from_row(r) for r in self._read(sql + " ORDER BY seq", tuple(params))]

    def update_run(
        self,
        run_id: str,
        *,
        expected: Iterable[RunState] | None = None,
        state: RunState | None = None,
        detail: str | None = None,
        **changes: Any,
    ) -> RunRecord:
        unknown = set(changes) - _RUN_COLUMNS
        if unknown:
            raise ValueError(f"unknown run fields: {sorted(unknown)}")
        with self._write() as db:
            current = self._run_row(db, run_id)
            allowed = set(expected) if expected is not None else None
            if allowed is not None and current.state not in allowed:
                raise TransitionConflictError(
                    f"run {run_id} is {current.state.value}, not {' or '.join(sorted(s.value for s in allowed))}",
                    actual=current.state.value,
                    expected="|".join(sorted(s.value for s in allowed)),
                )
            now = iso(utcnow())
            columns: dict[str, Any] = {"updated_at": now}
            for key, value in changes.items():
                columns[key] = _encode_run_value(key, value, current)
            if state is not None:
                columns["state"] = state.value
            assignments = ", ".join(f"{k} = ?" for k in columns)
            db.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*columns.values(), run_id))  # noqa: S608
            if state is not None and state != current.state:
                db.execute(
                    "INSERT INTO run_events (run_id, from_state, to_state, at, detail) VALUES (?, ?, ?, ?, ?)",
                    (run_id, current.state.value, state.value, now, detail),
                )
            return self._run_row(db, run_id)

    def run_events(self, run_id: str) -> list[RunEventRecord]:
        rows = self._read("SELECT * FROM run_events WHERE run_id = ? ORDER BY seq", (run_id,))
        return [
            RunEventRecord(
                seq=r["seq"],
                run_id=r["run_id"],
                from_state=r["from_state"],
                to_state=r["to_state"],
                at=r["at"],
                detail=r["detail"],
            )
            for r in rows
        ]

    def lease_subnet(self, run_id: str, slots: int, skip: Iterable[int] = ()) -> int:
        with self._write() as db:
            db.execute("DELETE FROM subnet_leases WHERE run_id = ?", (run_id,))
            taken = [row[0] for row in db.execute("SELECT slot FROM subnet_leases")]
            slot = lowest_free_slot(taken, slots, skip)
            db.execute(
                "INSERT INTO subnet_leases (slot, run_id, leased_at) VALUES (?, ?, ?)", (slot, run_id, iso(utcnow()))
            )
            return slot

    def release_subnet(self, run_id: str) -> bool:
        with self._write() as db:
            return db.execute("DELETE FROM subnet_leases WHERE run_id = ?", (run_id,)).rowcount == 1

    def transfer_subnet(self, holder: str, new_holder: str) -> bool:
        with self._write() as db:
            return (
                db.execute("UPDATE subnet_leases SET run_id = ? WHERE run_id = ?", (new_holder, holder)).rowcount == 1
            )

    def subnet_leases(self) -> dict[int, str]:
        return {int(r["slot"]): str(r["run_id"]) for r in self._read("SELECT slot, run_id FROM subnet_leases")}

    def close(self) -> None:
        self._db.close()


def _encode_run_value(key: str, value: Any, current: RunRecord) -> Any:
    if key == "details":
        # details merge rather than replace, so independent steps never erase each other.
        return json.dumps({**current.details, **value})
    if key == "owner":
        return value.model_dump_json() if value is not None else None
    if key in {"started_at", "ended_at"}:
        return iso(value) if value is not None else None
    if key == "cancel_requested":
        return int(bool(value))
    return value

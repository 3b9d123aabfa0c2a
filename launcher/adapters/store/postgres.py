"""Shared coordinator: PostgreSQL, for CI matrix jobs and several build boxes working one queue.

Same contract as the embedded SQLite coordinator (``sqlite.py`` is the reference): every
mutation is one transaction on this object's own connection, every state change a
compare-and-set. Where SQLite serialises writers with ``BEGIN IMMEDIATE``, this backend locks
exactly what a transaction depends on, at READ COMMITTED:

- task numbers come from ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` on the prefix's
  counter row, which serialises the allocators of one prefix and nobody else;
- status, document and run changes lock their row (``SELECT … FOR UPDATE``) and then check it;
- a run's attempt is allocated under its task's row lock, the global run number under a
  transaction-scoped advisory lock (gap-free, like SQLite's ``MAX + 1``);
- batch workers claim with ``FOR UPDATE SKIP LOCKED``, so they do not queue up behind each other;
- schema migrations run under a transaction-scoped advisory lock, so launchers opening a fresh
  database together migrate it once.

Every timestamp the coordinator stamps itself (created/updated/queued/transition times) and every
lease expiry comes from the server's clock, so several machines sharing one database agree on
order and on when a lease has run out whatever their own clocks say. Timestamps a caller passes
in (a run's ``started_at``/``ended_at``) are stored as given.

Deadlocks and serialisation failures abort a transaction with nothing written; they are retried
a few times before they surface as a StateStoreError.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from launcher.adapters.store.rows import run_from_row, task_from_row
from launcher.core.ports import Coordinator
from launcher.core.subnets import lowest_free_slot
from launcher.core.transitions import RunState, TaskStatus, check_legal
from launcher.errors import (
    InvalidInputError,
    LauncherError,
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
)

# How long a statement waits for a row or table lock: the counterpart of SQLite's busy timeout.
LOCK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10
# Deadlocks and serialisation failures roll the whole transaction back; run it again.
TRANSIENT_RETRIES = 5

# pg_advisory_xact_lock keys (per database): b"launcher" and b"launchrs" as big-endian int64.
_MIGRATION_LOCK = 0x6C61756E63686572
_RUN_SEQ_LOCK = 0x6C61756E63687273
_SUBNET_LOCK = 0x6C61756E636E6574  # b"launcnet"

# Each entry upgrades the schema by one version; never edit a released entry, append. The
# versions match the SQLite backend's: version N holds the same logical columns in both.
MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE id_counters (
            prefix TEXT PRIMARY KEY,
            last_number BIGINT NOT NULL
        )""",
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            number BIGINT NOT NULL,
            slug TEXT NOT NULL,
            title TEXT NOT NULL,
            repo TEXT NOT NULL,
            repo_path TEXT,
            base_ref TEXT NOT NULL,
            image TEXT,
            command TEXT NOT NULL,
            status TEXT NOT NULL,
            queued BOOLEAN NOT NULL DEFAULT FALSE,
            version BIGINT NOT NULL,
            doc TEXT NOT NULL,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            UNIQUE (prefix, number)
        )""",
        "CREATE INDEX tasks_status ON tasks (status)",
        """CREATE TABLE transitions (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            from_status TEXT,
            to_status TEXT NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL
        )""",
        "CREATE INDEX transitions_task ON transitions (task_id, seq)",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            seq BIGINT NOT NULL UNIQUE,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            attempt BIGINT NOT NULL,
            state TEXT NOT NULL,
            owner TEXT,
            branch TEXT NOT NULL,
            worktree TEXT NOT NULL,
            image TEXT,
            container_id TEXT,
            exit_code BIGINT,
            uid BIGINT,
            cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
            created_at TIMESTAMPTZ NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL,
            started_at TIMESTAMPTZ,
            ended_at TIMESTAMPTZ,
            details TEXT NOT NULL,
            UNIQUE (task_id, attempt)
        )""",
        "CREATE INDEX runs_state ON runs (state)",
        """CREATE TABLE run_events (
            seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            run_id TEXT NOT NULL REFERENCES runs (id),
            from_state TEXT,
            to_state TEXT NOT NULL,
            at TIMESTAMPTZ NOT NULL,
            detail TEXT
        )""",
        "CREATE INDEX run_events_run ON run_events (run_id, seq)",
    ],
    [
        # v2: task files adopted from a case harness keep their own path, and every file's last
        # known content hash tells a hand edit from launcher's own writes.
        "ALTER TABLE tasks ADD COLUMN file_path TEXT",
        "ALTER TABLE tasks ADD COLUMN file_sha256 TEXT",
        "ALTER TABLE tasks ADD COLUMN origin TEXT NOT NULL DEFAULT 'launcher'",
    ],
    [
        # v3: the queue. A claim is a lease (owner + expiry on the server's clock, unix seconds),
        # renewed while the run lives; an expired lease may be claimed again by another batch.
        "ALTER TABLE tasks ADD COLUMN queued_at TIMESTAMPTZ",
        "ALTER TABLE tasks ADD COLUMN lease_owner TEXT",
        "ALTER TABLE tasks ADD COLUMN lease_expires DOUBLE PRECISION",
        "ALTER TABLE tasks ADD COLUMN claims BIGINT NOT NULL DEFAULT 0",
        "UPDATE tasks SET queued_at = created_at WHERE queued",
        "CREATE INDEX tasks_queue ON tasks (queued, queued_at)",
    ],
    [
        # v4: run-network subnet slots; the primary key makes a slot impossible to hold twice.
        """CREATE TABLE subnet_leases (
            slot INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            leased_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
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

# Claimable: queued, and the lease free or expired on the server's clock (unix seconds). Ties in
# queued_at go by prefix in byte order (COLLATE "C", as SQLite sorts TEXT), then number.
_CLAIMABLE = """SELECT id FROM tasks
    WHERE queued AND (lease_owner IS NULL OR lease_expires < extract(epoch FROM clock_timestamp())::double precision)
    ORDER BY queued_at NULLS FIRST, prefix COLLATE "C", number LIMIT 1"""
_CLAIM_SKIP_LOCKED = _CLAIMABLE + " FOR UPDATE SKIP LOCKED"
_CLAIM_WAIT = _CLAIMABLE + " FOR UPDATE"

_TRANSITION_INSERT = (
    "INSERT INTO transitions (task_id, from_status, to_status, reason, actor, at) "
    "VALUES (%s, %s, %s, %s, %s, %s) RETURNING seq"
)

_T = TypeVar("_T")
Cursor = psycopg.Cursor[DictRow]


class PostgresCoordinator(Coordinator):
    def __init__(self, url: str) -> None:
        self.url = url
        self.display_url = redact_url(url)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[DictRow] | None = None
        self._closed = False
        self._conn = self._connect()
        self._migrate()

    # -- connection and transactions -----------------------------------------------------

    def _connect(self) -> psycopg.Connection[DictRow]:
        try:
            params = conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise InvalidInputError(
                f"cannot parse the PostgreSQL state URL {self.display_url}: {_first_line(exc)}",
                hint="use postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE",
            ) from exc
        # client_encoding: on a SQL_ASCII database psycopg would otherwise hand text back as bytes.
        defaults: dict[str, Any] = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "application_name": "launcher",
            "client_encoding": "utf8",
        }
        extra = {k: v for k, v in defaults.items() if k not in params}
        try:
            conn = psycopg.connect(self.url, autocommit=False, row_factory=dict_row, **extra)
        except psycopg.Error as exc:
            raise StateStoreError(
                f"cannot connect to the PostgreSQL state store {self.display_url}: {_first_line(exc)}",
                hint="check the state URL (host, port, database, user, password) and that the PostgreSQL "
                "server is running and reachable from here",
            ) from exc
        try:
            # UTC: timestamps come back as aware UTC datetimes, as the SQLite backend returns them.
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(LOCK_TIMEOUT_S * 1000)}ms")))
            conn.commit()
        except psycopg.Error as exc:
            conn.close()
            raise self._store_error(exc) from exc
        return conn

    def _connection(self) -> psycopg.Connection[DictRow]:
        if self._closed:
            raise StateStoreError(f"the state store {self.display_url} is closed")
        if self._conn is None or self._conn.closed:
            # A connection the server or the network dropped: the transaction that saw it go
            # failed (and said so); later calls get a fresh connection.
            self._conn = self._connect()
        return self._conn

    def _transact(self, body: Callable[[Cursor], _T]) -> _T:
        """Run ``body`` in one transaction: commit if it returns, roll back if it raises."""
        with self._lock:
            for attempt in range(TRANSIENT_RETRIES + 1):
                conn = self._connection()
                try:
                    with conn.cursor() as cur:
                        result = body(cur)
                    conn.commit()
                    return result
                except BaseException as exc:
                    _rollback_quietly(conn)
                    transient = isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected)
                    if transient and attempt < TRANSIENT_RETRIES:
                        time.sleep(0.01 * 2**attempt)
                        continue
                    if isinstance(exc, psycopg.Error):
                        raise self._store_error(exc) from exc
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _store_error(self, exc: psycopg.Error) -> LauncherError:
        text = _first_line(exc)
        where = self.display_url
        if isinstance(exc, pg_errors.LockNotAvailable):
            return StateStoreError(
                f"the state store {where} stayed locked for {LOCK_TIMEOUT_S:.0f}s ({text})",
                hint="another launcher process holds a long transaction; retry",
            )
        if isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected):
            return StateStoreError(
                f"the state store {where} kept aborting a transaction that collided with others ({text})",
                hint="many launchers are changing the same tasks at once; retry",
            )
        if isinstance(exc, pg_errors.InsufficientPrivilege):
            return StateStoreError(
                f"the PostgreSQL user may not do what launcher needs in {where} ({text})",
                hint="make the user the database's owner, or grant it CREATE on its schema and "
                "read/write on launcher's tables",
            )
        if isinstance(exc, pg_errors.UndefinedTable | pg_errors.UndefinedColumn):
            return StateStoreError(
                f"the state store {where} is not a launcher database, or was changed by hand ({text})",
                hint="point the state URL at a database of its own",
            )
        if _connection_lost(exc):
            return StateStoreError(
                f"lost the connection to the PostgreSQL state store {where} ({text})",
                hint="check that the PostgreSQL server is running and reachable; the change may or may "
                "not have been made, so look before retrying",
            )
        return StateStoreError(f"state store {where}: {text}")

    def _migrate(self) -> None:
        def body(cur: Cursor) -> None:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            cur.execute("SELECT to_regclass('schema_version') IS NOT NULL AS present")
            if not _one(cur)["present"]:
                cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            cur.execute("SELECT version FROM schema_version")
            row = cur.fetchone()
            current = int(row["version"]) if row else 0
            if current > SCHEMA_VERSION:
                raise StateStoreError(
                    f"the state store {self.display_url} has schema version {current}, newer than this "
                    f"launcher understands ({SCHEMA_VERSION})",
                    hint="upgrade launcher",
                )
            for statements in MIGRATIONS[current:]:
                for statement in statements:
                    cur.execute(statement)
            if row is None:
                cur.execute("INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,))
            elif current != SCHEMA_VERSION:
                cur.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))

        try:
            self._transact(body)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _now(cur: Cursor) -> datetime:
        cur.execute("SELECT clock_timestamp() AS now")
        now: datetime = _one(cur)["now"]
        return now

    # -- tasks ---------------------------------------------------------------------------

    def create_task(self, new: NewTask) -> TaskRecord:
        def body(cur: Cursor) -> TaskRecord:
            cur.execute(
                "INSERT INTO id_counters (prefix, last_number) VALUES (%s, 1) "
                "ON CONFLICT (prefix) DO UPDATE SET last_number = id_counters.last_number + 1 "
                "RETURNING last_number",
                (new.prefix,),
            )
            number = int(_one(cur)["last_number"])
            now = self._now(cur)
            task_id = f"{new.prefix}-{number}-{new.slug}"
            doc = {"id": task_id, **{k: v for k, v in new.doc.items() if k != "id"}}
            status = TaskStatus(doc.get("status", TaskStatus.ACTIVE.value))
            doc["status"] = status.value
            cur.execute(
                """INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, image,
                   command, status, queued, version, doc, created_at, updated_at, queued_at)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s, %s, %s)""",
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
                    new.queued,
                    json.dumps(doc),
                    now,
                    now,
                    now if new.queued else None,
                ),
            )
            cur.execute(_TRANSITION_INSERT, (task_id, None, status.value, "created", "launcher", now))
            return self._task_row(cur, task_id)

        return self._transact(body)

    @staticmethod
    def _task_row(cur: Cursor, task_id: str, *, lock: bool = False) -> TaskRecord:
        if lock:
            cur.execute("SELECT * FROM tasks WHERE id = %s FOR UPDATE", (task_id,))
        else:
            cur.execute("SELECT * FROM tasks WHERE id = %s", (task_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no task {task_id!r}", hint="`launcher task list` shows the known tasks")
        return task_from_row(row)

    def get_task(self, task_id: str) -> TaskRecord:
        return self._transact(lambda cur: self._task_row(cur, task_id))

    def resolve_task(self, ref: str) -> TaskRecord:
        def body(cur: Cursor) -> TaskRecord:
            cur.execute("SELECT * FROM tasks WHERE id = %s", (ref,))
            row = cur.fetchone()
            if row is not None:
                return task_from_row(row)
            prefix, _, number = ref.rpartition("-")
            # ASCII digits only ("²".isdigit() is true, int() refuses it) and within BIGINT.
            if prefix and number.isascii() and number.isdigit() and len(number) <= 18:
                cur.execute("SELECT * FROM tasks WHERE prefix = %s AND number = %s", (prefix, int(number)))
                row = cur.fetchone()
                if row is not None:
                    return task_from_row(row)
            raise NotFoundError(f"no task {ref!r}", hint="`launcher task list` shows the known tasks")

        return self._transact(body)

    def list_tasks(self, status: TaskStatus | None = None) -> list[TaskRecord]:
        def body(cur: Cursor) -> list[TaskRecord]:
            if status is None:
                cur.execute('SELECT * FROM tasks ORDER BY prefix COLLATE "C", number')
            else:
                cur.execute(
                    'SELECT * FROM tasks WHERE status = %s ORDER BY prefix COLLATE "C", number', (status.value,)
                )
            return [task_from_row(r) for r in cur.fetchall()]

        return self._transact(body)

    def transition(
        self, task_id: str, expected: TaskStatus, target: TaskStatus, *, reason: str | None, actor: str
    ) -> tuple[TaskRecord, TransitionRecord]:
        def body(cur: Cursor) -> tuple[TaskRecord, TransitionRecord]:
            current = self._task_row(cur, task_id, lock=True)
            if current.status != expected:
                raise TransitionConflictError(
                    f"task {task_id} is {current.status.value}, not {expected.value}: someone else changed it first",
                    actual=current.status.value,
                    expected=expected.value,
                )
            check_legal(current.status, target)
            now = self._now(cur)
            doc = dict(current.doc)
            doc["status"] = target.value
            cur.execute(
                "UPDATE tasks SET status = %s, doc = %s, version = version + 1, updated_at = %s WHERE id = %s",
                (target.value, json.dumps(doc), now, task_id),
            )
            cur.execute(_TRANSITION_INSERT, (task_id, expected.value, target.value, reason, actor, now))
            seq = int(_one(cur)["seq"])
            record = TransitionRecord(
                seq=seq,
                task_id=task_id,
                from_status=expected,
                to_status=target,
                reason=reason,
                actor=actor,
                at=now,
            )
            return self._task_row(cur, task_id), record

        return self._transact(body)

    def adopt_task(self, task: AdoptedTask) -> TaskRecord:
        def body(cur: Cursor) -> TaskRecord:
            # Reserving first locks the prefix's counter row: adopters and creators of one prefix
            # queue up here, so the checks below see every task committed before this one.
            self._reserve(cur, task.prefix, task.number)
            cur.execute("SELECT 1 FROM tasks WHERE id = %s", (task.id,))
            if cur.fetchone() is not None:
                raise TransitionConflictError(f"task {task.id} is already known", actual="known", expected="new")
            cur.execute("SELECT id FROM tasks WHERE prefix = %s AND number = %s", (task.prefix, task.number))
            clash = cur.fetchone()
            if clash is not None:
                raise InvalidInputError(
                    f"task file {task.file_path} ({task.id}) reuses number {task.number} of {clash['id']}",
                    hint="give one of them a new number; launcher never hands a number out twice",
                )
            status = TaskStatus(task.doc["status"])
            now = self._now(cur)
            cur.execute(
                """INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, base_ref, image,
                   command, status, queued, version, doc, created_at, updated_at, file_path, file_sha256, origin)
                   VALUES (%s, %s, %s, %s, %s, %s, %s, 'HEAD', NULL, '[]', %s, FALSE, 1, %s, %s, %s, %s, %s,
                   'adopted')""",
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
            cur.execute(
                _TRANSITION_INSERT, (task.id, None, status.value, f"adopted from {task.file_path}", "launcher", now)
            )
            return self._task_row(cur, task.id)

        return self._transact(body)

    def reserve_numbers(self, prefix: str, number: int) -> None:
        self._transact(lambda cur: self._reserve(cur, prefix, number))

    @staticmethod
    def _reserve(cur: Cursor, prefix: str, number: int) -> None:
        cur.execute(
            "INSERT INTO id_counters (prefix, last_number) VALUES (%s, %s) "
            "ON CONFLICT (prefix) DO UPDATE SET last_number = GREATEST(id_counters.last_number, excluded.last_number)",
            (prefix, number),
        )

    def task_file_paths(self) -> set[str]:
        def body(cur: Cursor) -> set[str]:
            cur.execute("SELECT file_path FROM tasks WHERE file_path IS NOT NULL")
            return {r["file_path"] for r in cur.fetchall()}

        return self._transact(body)

    def record_file(self, task_id: str, path: str, sha256: str) -> None:
        def body(cur: Cursor) -> None:
            cur.execute("UPDATE tasks SET file_path = %s, file_sha256 = %s WHERE id = %s", (path, sha256, task_id))

        self._transact(body)

    def import_external_change(self, task_id: str, doc: dict[str, Any], sha256: str) -> TaskRecord:
        def body(cur: Cursor) -> TaskRecord:
            current = self._task_row(cur, task_id, lock=True)
            status = TaskStatus(doc["status"])
            now = self._now(cur)
            cur.execute(
                "UPDATE tasks SET doc = %s, status = %s, file_sha256 = %s, version = version + 1, updated_at = %s "
                "WHERE id = %s",
                (json.dumps(doc), status.value, sha256, now, task_id),
            )
            if status != current.status:
                cur.execute(
                    _TRANSITION_INSERT,
                    (
                        task_id,
                        current.status.value,
                        status.value,
                        "task file changed outside launcher",
                        "external",
                        now,
                    ),
                )
            return self._task_row(cur, task_id)

        return self._transact(body)

    def update_task_doc(self, task_id: str, expected_version: int, doc: dict[str, Any], *, actor: str) -> TaskRecord:
        def body(cur: Cursor) -> TaskRecord:
            current = self._task_row(cur, task_id, lock=True)
            if current.version != expected_version:
                raise TransitionConflictError(
                    f"task {task_id} changed since version {expected_version} (now {current.version})",
                    actual=str(current.version),
                    expected=str(expected_version),
                )
            if doc.get("id") != task_id or doc.get("status") != current.status.value:
                raise InvalidInputError("a task document update may not change its id or status")
            cur.execute(
                "UPDATE tasks SET doc = %s, version = version + 1, updated_at = %s WHERE id = %s",
                (json.dumps(doc), self._now(cur), task_id),
            )
            return self._task_row(cur, task_id)

        return self._transact(body)

    def history(self, task_id: str) -> list[TransitionRecord]:
        def body(cur: Cursor) -> list[TransitionRecord]:
            self._task_row(cur, task_id)
            cur.execute("SELECT * FROM transitions WHERE task_id = %s ORDER BY seq", (task_id,))
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
                for r in cur.fetchall()
            ]

        return self._transact(body)

    # -- the queue -----------------------------------------------------------------------

    def enqueue(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        wanted = list(task_ids)

        def body(cur: Cursor) -> list[TaskRecord]:
            now = self._now(cur)
            queued = []
            for task_id in wanted:
                self._task_row(cur, task_id, lock=True)
                cur.execute(
                    "UPDATE tasks SET queued = TRUE, queued_at = %s, lease_owner = NULL, lease_expires = NULL, "
                    "updated_at = %s WHERE id = %s",
                    (now, now, task_id),
                )
                queued.append(self._task_row(cur, task_id))
            return queued

        return self._transact(body)

    def claim_next(self, owner: str, lease_seconds: float) -> TaskRecord | None:
        def body(cur: Cursor) -> TaskRecord | None:
            # Other claimers' rows are skipped rather than waited for...
            cur.execute(_CLAIM_SKIP_LOCKED)
            row = cur.fetchone()
            if row is None:
                # ...but "nothing claimable" must not be said of a task that is only locked for
                # a moment (a transition, a renewal, a release that keeps it queued): wait for
                # those locks and look again, as SQLite's serialised writers would.
                cur.execute(_CLAIM_WAIT)
                row = cur.fetchone()
                if row is None:
                    return None
            cur.execute(
                "UPDATE tasks SET lease_owner = %s, claims = claims + 1, "
                "lease_expires = extract(epoch FROM clock_timestamp())::double precision + %s WHERE id = %s",
                (owner, float(lease_seconds), row["id"]),
            )
            return self._task_row(cur, row["id"])

        return self._transact(body)

    def renew_lease(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        def body(cur: Cursor) -> bool:
            cur.execute(
                "UPDATE tasks SET lease_expires = extract(epoch FROM clock_timestamp())::double precision + %s "
                "WHERE id = %s AND lease_owner = %s",
                (float(lease_seconds), task_id, owner),
            )
            return cur.rowcount == 1

        return self._transact(body)

    def release_claim(self, task_id: str, owner: str, *, done: bool) -> bool:
        def body(cur: Cursor) -> bool:
            cur.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL, "
                "queued = CASE WHEN %s THEN FALSE ELSE queued END, updated_at = clock_timestamp() "
                "WHERE id = %s AND lease_owner = %s",
                (done, task_id, owner),
            )
            return cur.rowcount == 1

        return self._transact(body)

    # -- runs ----------------------------------------------------------------------------

    def create_run(self, new: NewRun) -> RunRecord:
        def body(cur: Cursor) -> RunRecord:
            # The task's row lock orders the attempts of one task; the advisory lock the global
            # run numbers (gap-free, so a rolled-back run never burns a number).
            task = self._task_row(cur, new.task_id, lock=True)
            cur.execute("SELECT COALESCE(MAX(attempt), 0) + 1 AS attempt FROM runs WHERE task_id = %s", (task.id,))
            attempt = int(_one(cur)["attempt"])
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_RUN_SEQ_LOCK,))
            cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM runs")
            seq = int(_one(cur)["seq"])
            now = self._now(cur)
            run_id = f"{task.prefix}-{task.number}.{attempt}"
            branch = f"launcher/{task.id}/{attempt}"
            worktree = str(Path(new.worktrees_dir) / run_id)
            cur.execute(
                """INSERT INTO runs (id, seq, task_id, attempt, state, owner, branch, worktree, image,
                   created_at, updated_at, details) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)""",
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
            cur.execute(
                "INSERT INTO run_events (run_id, from_state, to_state, at, detail) VALUES (%s, NULL, %s, %s, NULL)",
                (run_id, RunState.CREATED.value, now),
            )
            return self._run_row(cur, run_id)

        return self._transact(body)

    def lease_subnet(self, run_id: str, slots: int, skip: Iterable[int] = ()) -> int:
        def body(cur: Cursor) -> int:
            # Serialises allocators: "lowest free" read and the insert must not interleave.
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (_SUBNET_LOCK,))
            cur.execute("DELETE FROM subnet_leases WHERE run_id = %s", (run_id,))
            cur.execute("SELECT slot FROM subnet_leases")
            slot = lowest_free_slot((int(r["slot"]) for r in cur.fetchall()), slots, skip)
            cur.execute("INSERT INTO subnet_leases (slot, run_id) VALUES (%s, %s)", (slot, run_id))
            return slot

        return self._transact(body)

    def release_subnet(self, run_id: str) -> bool:
        def body(cur: Cursor) -> bool:
            cur.execute("DELETE FROM subnet_leases WHERE run_id = %s", (run_id,))
            return cur.rowcount == 1

        return self._transact(body)

    def transfer_subnet(self, holder: str, new_holder: str) -> bool:
        def body(cur: Cursor) -> bool:
            cur.execute("UPDATE subnet_leases SET run_id = %s WHERE run_id = %s", (new_holder, holder))
            return cur.rowcount == 1

        return self._transact(body)

    def subnet_leases(self) -> dict[int, str]:
        def body(cur: Cursor) -> dict[int, str]:
            cur.execute("SELECT slot, run_id FROM subnet_leases")
            return {int(r["slot"]): str(r["run_id"]) for r in cur.fetchall()}

        return self._transact(body)

    @staticmethod
    def _run_row(cur: Cursor, run_id: str, *, lock: bool = False) -> RunRecord:
        if lock:
            cur.execute("SELECT * FROM runs WHERE id = %s FOR UPDATE", (run_id,))
        else:
            cur.execute("SELECT * FROM runs WHERE id = %s", (run_id,))
        row = cur.fetchone()
        if row is None:
            raise NotFoundError(f"no run {run_id!r}", hint="`launcher ps --all` shows the known runs")
        return run_from_row(row)

    def get_run(self, run_id: str) -> RunRecord:
        return self._transact(lambda cur: self._run_row(cur, run_id))

    def list_runs(self, *, states: Iterable[RunState] | None = None, task_id: str | None = None) -> list[RunRecord]:
        conditions: list[sql.Composable] = [sql.SQL("TRUE")]
        params: list[Any] = []
        if states is not None:
            conditions.append(sql.SQL("state = ANY(%s)"))
            params.append([s.value for s in states])
        if task_id is not None:
            conditions.append(sql.SQL("task_id = %s"))
            params.append(task_id)
        query = sql.SQL("SELECT * FROM runs WHERE {} ORDER BY seq").format(sql.SQL(" AND ").join(conditions))

        def body(cur: Cursor) -> list[RunRecord]:
            cur.execute(query, params)
            return [run_from_row(r) for r in cur.fetchall()]

        return self._transact(body)

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
        allowed = set(expected) if expected is not None else None

        def body(cur: Cursor) -> RunRecord:
            current = self._run_row(cur, run_id, lock=True)
            if allowed is not None and current.state not in allowed:
                raise TransitionConflictError(
                    f"run {run_id} is {current.state.value}, not {' or '.join(sorted(s.value for s in allowed))}",
                    actual=current.state.value,
                    expected="|".join(sorted(s.value for s in allowed)),
                )
            now = self._now(cur)
            columns: dict[str, Any] = {"updated_at": now}
            for key, value in changes.items():
                columns[key] = _encode_run_value(key, value, current)
            if state is not None:
                columns["state"] = state.value
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder()) for k in columns
            )
            cur.execute(
                sql.SQL("UPDATE runs SET {} WHERE id = {}").format(assignments, sql.Placeholder()),
                (*columns.values(), run_id),
            )
            if state is not None and state != current.state:
                cur.execute(
                    "INSERT INTO run_events (run_id, from_state, to_state, at, detail) VALUES (%s, %s, %s, %s, %s)",
                    (run_id, current.state.value, state.value, now, detail),
                )
            return self._run_row(cur, run_id)

        return self._transact(body)

    def run_events(self, run_id: str) -> list[RunEventRecord]:
        def body(cur: Cursor) -> list[RunEventRecord]:
            cur.execute("SELECT * FROM run_events WHERE run_id = %s ORDER BY seq", (run_id,))
            return [
                RunEventRecord(
                    seq=r["seq"],
                    run_id=r["run_id"],
                    from_state=r["from_state"],
                    to_state=r["to_state"],
                    at=r["at"],
                    detail=r["detail"],
                )
                for r in cur.fetchall()
            ]

        return self._transact(body)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def redact_url(url: str) -> str:
    """The URL as it may be shown: without its password (in the netloc or the query)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.partition(":")[0]
            netloc = f"{user}:***@{hostinfo}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode([(k, "***" if k.lower() == "password" else v) for k, v in pairs], safe="*")
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        return "<unparsable PostgreSQL URL>"


def _connection_lost(exc: psycopg.Error) -> bool:
    """The server went away (shut down, terminated this backend, network gone), not a statement error."""
    if isinstance(exc, pg_errors.AdminShutdown | pg_errors.CrashShutdown | pg_errors.CannotConnectNow):
        return True
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    return exc.sqlstate is None or exc.sqlstate.startswith("08")  # class 08: connection exception


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _rollback_quietly(conn: psycopg.Connection[DictRow]) -> None:
    if conn.closed:
        return
    try:
        conn.rollback()
    except psycopg.Error:
        conn.close()


def _one(cur: Cursor) -> DictRow:
    row = cur.fetchone()
    if row is None:  # pragma: no cover - every caller's statement returns exactly one row
        raise StateStoreError("the state store returned no row where one was expected")
    return row


def _encode_run_value(key: str, value: Any, current: RunRecord) -> Any:
    if key == "details":
        # details merge rather than replace, so independent steps never erase each other.
        return json.dumps({**current.details, **value})
    if key == "owner":
        return value.model_dump_json() if value is not None else None
    if key in {"started_at", "ended_at"}:
        return value.astimezone(UTC) if value is not None else None
    if key == "cancel_requested":
        return bool(value)
    return value

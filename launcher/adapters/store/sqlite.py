"""Embedded coordinator: SQLite in WAL mode, every write transaction BEGIN IMMEDIATE.

BEGIN IMMEDIATE takes SQLite's write lock up front, so two processes allocating IDs or
changing a status are serialised by the database itself (waiting up to the busy timeout)
instead of failing half-way with SQLITE_BUSY on the upgrade from a read lock. Because whole
write transactions are serialised, this dialect needs no row locks and no serialising points.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from launcher.adapters.locks import file_lock
from launcher.adapters.store.sql import schema
from launcher.adapters.store.sql.coordinator import SqlCoordinator
from launcher.adapters.store.sql.dialect import ColumnTypes, Cursor, Serialised
from launcher.errors import LockTimeoutError, NoStateStoreError, StateStoreError
from launcher.models import iso, utcnow

BUSY_TIMEOUT_S = 60.0

TYPES = ColumnTypes(
    integer="INTEGER",
    flag="INTEGER NOT NULL DEFAULT 0",
    timestamp="TEXT",  # case's form: ISO-8601 UTC with an explicit offset, which sorts as text
    real="REAL",
    serial="INTEGER PRIMARY KEY AUTOINCREMENT",
    stamp_default="",
)
MIGRATIONS = schema.migrations(TYPES)
SCHEMA_VERSION = schema.SCHEMA_VERSION

_T = TypeVar("_T")


def _now_text() -> str:
    return iso(utcnow())


def _epoch() -> float:
    return time.time()


class SqliteDialect:
    types = TYPES
    collate = ""  # TEXT already sorts by bytes (BINARY)
    greatest = "MAX"
    for_update = ""
    claim_locks: tuple[str, ...] = ("",)
    # The host's clock, through functions registered on the connection.
    clock = "launcher_now()"
    epoch = "launcher_epoch()"

    _db: sqlite3.Connection

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        self.where = str(path)
        self.create = create
        self._write_lock = path.with_name(f".{path.name}.write.lock")
        # One connection, shareable between threads (a run prepares its worktree and its
        # network at once): a transaction must not take in another thread's statements.
        self._thread_lock = threading.RLock()

    def open(self, setup: Callable[[Cursor], None]) -> None:
        path = self.path
        if not self.create and not path.exists() and (path.parent.is_dir() or not path.parent.exists()):
            # A read-only command (ps, logs, task list, …) in a folder launcher never used: it
            # must leave no .launcher/ behind, so nothing is made, not even the lock file.
            raise NoStateStoreError(
                f"no state store at {path}: launcher has not been used under this case root",
                hint="`launcher init` makes one; --root, CASE_ROOT or --state-url name another",
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # SQLite does not wait out its busy timeout while switching a new file to WAL, so
            # two processes opening a fresh store at once would fail: serialise the opening.
            with file_lock(path.with_name(f".{path.name}.open.lock"), timeout=BUSY_TIMEOUT_S):
                self._db = sqlite3.connect(
                    str(path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
                )
                try:
                    self._configure()
                    self.write(setup)
                except BaseException:
                    self._db.close()
                    raise
        except sqlite3.DatabaseError as exc:
            raise self._store_error(exc) from exc
        except OSError as exc:
            raise StateStoreError(
                f"cannot open the state store at {path}: {exc.strerror or exc}",
                hint="check that the case root is writable, or pass --state-url",
            ) from exc

    def _configure(self) -> None:
        db = self._db
        db.row_factory = sqlite3.Row
        db.create_function("launcher_now", 0, _now_text)
        db.create_function("launcher_epoch", 0, _epoch)
        db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        mode = self._switch_to_wal()
        if mode.lower() != "wal":
            raise StateStoreError(f"{self.path}: SQLite refused WAL mode (got {mode})")
        # FULL: a task file is written only after its commit is durable, so a crash
        # can never leave a file whose ID the database will hand out again.
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")

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
        if "full" in text:  # SQLITE_FULL: "database or disk is full"
            return StateStoreError(
                f"the state store {self.path} cannot grow: the disk under it is full ({text})",
                hint="free space (`launcher gc --older-than 7d` prunes old runs' records); nothing was half-written",
            )
        return StateStoreError(f"state store {self.path}: {text}")

    def write(self, body: Callable[[Cursor], _T]) -> _T:
        # Writers queue on a file lock first: SQLite's own busy handler sleeps up to 100 ms
        # between tries, so 16 contending processes spend most of their time asleep. The
        # lock is polled at ≤ 2 ms; BEGIN IMMEDIATE and the busy timeout stay the safety net
        # for writers that do not take it (another tool, an older launcher).
        try:
            with self._thread_lock, file_lock(self._write_lock, timeout=BUSY_TIMEOUT_S, max_delay=0.002):
                return self._transaction(body)
        except LockTimeoutError as exc:
            raise StateStoreError(
                f"the state store {self.path} stayed locked for {BUSY_TIMEOUT_S:.0f}s",
                hint="another launcher process holds a long transaction; retry",
            ) from exc

    def _transaction(self, body: Callable[[Cursor], _T]) -> _T:
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc
        try:
            result = body(db)
        except sqlite3.Error as exc:
            _rollback(db)
            raise self._store_error(exc) from exc
        except BaseException:
            _rollback(db)
            raise
        try:
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(db)
            raise self._store_error(exc) from exc
        return result

    def read(self, body: Callable[[Cursor], _T]) -> _T:
        # No transaction: each statement reads a committed snapshot of its own, and a reader
        # never waits for the writer lock.
        try:
            with self._thread_lock:
                return body(self._db)
        except sqlite3.Error as exc:
            raise self._store_error(exc) from exc

    def now(self, cur: Cursor) -> datetime:
        return utcnow()

    def stamp(self, value: datetime) -> Any:
        return iso(value)

    def serialise(self, cur: Cursor, point: Serialised) -> None:
        """Nothing to do: the writer lock serialises whole transactions."""

    def has_table(self, cur: Cursor, name: str) -> bool:
        sql = "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?"
        return cur.execute(sql, (name,)).fetchone() is not None

    def close(self) -> None:
        self._db.close()


class SqliteCoordinator(SqlCoordinator):
    """``create=False``: open only a store that exists (NoStateStoreError otherwise), creating nothing."""

    def __init__(self, path: Path, *, create: bool = True) -> None:
        self.path = path
        super().__init__(SqliteDialect(path, create=create))


class EmptySqliteCoordinator(SqliteCoordinator):
    """An empty store in a temporary folder outside any case root, gone when closed: what a
    read-only command looks at where there is no store, so that it answers (no runs, no
    tasks) without leaving a store behind."""

    def __init__(self) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="launcher-no-store-"))
        try:
            super().__init__(self._folder / "state.db")
        except BaseException:
            shutil.rmtree(self._folder, ignore_errors=True)
            raise

    def close(self) -> None:
        try:
            super().close()
        finally:
            shutil.rmtree(self._folder, ignore_errors=True)


def _rollback(db: sqlite3.Connection) -> None:
    """Undo the open transaction, if SQLite has not already (a full disk rolls it back itself,
    and a second ROLLBACK would hide that error behind "no transaction is active")."""
    if db.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            db.execute("ROLLBACK")

"""Shared coordinator: PostgreSQL, for CI matrix jobs and several build boxes working one queue.

The coordinator itself is ``sql/`` (the same statements as SQLite's); this dialect supplies
what PostgreSQL does differently. Transactions run at READ COMMITTED and lock exactly what they
depend on:

- task numbers come from ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` on the prefix's
  counter row, which serialises the allocators of one prefix and nobody else;
- status, document and run changes lock their row (``SELECT … FOR UPDATE``) and then check it;
- a run's attempt is allocated under its task's row lock, the global run number under a
  transaction-scoped advisory lock (gap-free, like SQLite's ``MAX + 1``);
- batch workers claim with ``FOR UPDATE SKIP LOCKED``, so they do not queue up behind each other;
- schema migrations run under a transaction-scoped advisory lock, so launchers opening a fresh
  database together migrate it once.

Every timestamp the coordinator stamps itself (created/updated/queued/transition times) and every
lease expiry comes from the server's clock (``clock_timestamp()``), so several machines sharing
one database agree on order and on when a lease has run out whatever their own clocks say.

Deadlocks and serialisation failures abort a transaction with nothing written; they are retried
a few times before they surface as a StateStoreError.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from launcher.adapters.store.sql import schema
from launcher.adapters.store.sql.coordinator import SqlCoordinator
from launcher.adapters.store.sql.dialect import ColumnTypes, Cursor, Serialised, one
from launcher.errors import InvalidInputError, LauncherError, StateStoreError

# How long a statement waits for a row or table lock: the counterpart of SQLite's busy timeout.
LOCK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10
# Deadlocks and serialisation failures roll the whole transaction back; run it again.
TRANSIENT_RETRIES = 5

# pg_advisory_xact_lock keys (per database): b"launcher", b"launchrs", b"launcnet" as big-endian int64.
_ADVISORY_KEYS: dict[Serialised, int] = {
    "migration": 0x6C61756E63686572,
    "run-seq": 0x6C61756E63687273,
    "subnet": 0x6C61756E636E6574,
}

TYPES = ColumnTypes(
    integer="BIGINT",
    flag="BOOLEAN NOT NULL DEFAULT FALSE",
    timestamp="TIMESTAMPTZ",
    real="DOUBLE PRECISION",
    serial="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    stamp_default=" DEFAULT clock_timestamp()",
)
MIGRATIONS = schema.migrations(TYPES)
SCHEMA_VERSION = schema.SCHEMA_VERSION

_T = TypeVar("_T")


@lru_cache(maxsize=256)
def _placeholders(statement: str) -> str:
    return statement.replace("%", "%%").replace("?", "%s")


class _Statements:
    """A psycopg cursor taking the coordinator's ``?`` placeholders."""

    __slots__ = ("_cur",)

    def __init__(self, cur: psycopg.Cursor[DictRow]) -> None:
        self._cur = cur

    def execute(self, statement: str, params: Sequence[Any] = (), /) -> psycopg.Cursor[DictRow]:
        return self._cur.execute(_placeholders(statement), params)


class PostgresDialect:
    types = TYPES
    collate = ' COLLATE "C"'  # byte order, as SQLite sorts TEXT, whatever the database's locale
    greatest = "GREATEST"
    for_update = " FOR UPDATE"
    claim_locks: tuple[str, ...] = (" FOR UPDATE SKIP LOCKED", " FOR UPDATE")
    clock = "clock_timestamp()"
    epoch = "extract(epoch FROM clock_timestamp())::double precision"

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = redact_url(url)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[DictRow] | None = None
        self._closed = False

    # -- connection and transactions -----------------------------------------------------

    def open(self, setup: Callable[[Cursor], None]) -> None:
        self._conn = self._connect()
        try:
            self.write(setup)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> psycopg.Connection[DictRow]:
        try:
            params = conninfo_to_dict(self.url)
        except psycopg.Error as exc:
            raise InvalidInputError(
                f"cannot parse the PostgreSQL state URL {self.where}: {_first_line(exc)}",
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
                f"cannot connect to the PostgreSQL state store {self.where}: {_first_line(exc)}",
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
            raise StateStoreError(f"the state store {self.where} is closed")
        if self._conn is None or self._conn.closed:
            # A connection the server or the network dropped: the transaction that saw it go
            # failed (and said so); later calls get a fresh connection.
            self._conn = self._connect()
        return self._conn

    def write(self, body: Callable[[Cursor], _T]) -> _T:
        """Run ``body`` in one transaction: commit if it returns, roll back if it raises."""
        with self._lock:
            for attempt in range(TRANSIENT_RETRIES + 1):
                conn = self._connection()
                try:
                    with conn.cursor() as cur:
                        result = body(_Statements(cur))
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

    read = write

    def _store_error(self, exc: psycopg.Error) -> LauncherError:
        text = _first_line(exc)
        where = self.where
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

    # -- what the coordinator's statements need --------------------------------------------

    def now(self, cur: Cursor) -> datetime:
        now: datetime = one(cur.execute("SELECT clock_timestamp() AS now"))["now"]
        return now

    def stamp(self, value: datetime) -> Any:
        return value.astimezone(UTC)

    def serialise(self, cur: Cursor, point: Serialised) -> None:
        cur.execute("SELECT pg_advisory_xact_lock(?)", (_ADVISORY_KEYS[point],))

    def has_table(self, cur: Cursor, name: str) -> bool:
        # Not CREATE TABLE IF NOT EXISTS: that needs CREATE on the schema even when the table is there.
        return bool(one(cur.execute("SELECT to_regclass(?::text) IS NOT NULL AS present", (name,)))["present"])

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresCoordinator(SqlCoordinator):
    def __init__(self, url: str) -> None:
        dialect = PostgresDialect(url)
        self.url = url
        self.display_url = dialect.where
        super().__init__(dialect)


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

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

Retries (tenacity, in ``write``): a transaction is run again only when it is known not to have
committed, so every call is safe to retry, the non-idempotent ones too (create_run's attempt and
run number, task numbers, subnet leases, a claim_next that would otherwise leave a claim nobody
knows of until its lease expires):

- a deadlock or serialisation failure aborts it with nothing written: again, a few times, at once;
- the server going away (refused or timed-out connects, a dropped connection, an administrator or
  crash shutdown, "the database system is starting up") before COMMIT was sent: nothing written,
  PostgreSQL rolls back what a vanished client left open; again with exponential backoff for up
  to ``[coordinator] reconnect_seconds`` (30 s) in all, so a restart or a short cut is ridden out;
- the connection dropping while COMMIT was on its way: it may or may not have committed. The
  transaction's id (asked for just before COMMIT; a read-only transaction has none and needs no
  answer) is looked up with ``txid_status`` once the server answers again: committed, and the
  body's result stands; aborted, and it is run again; still open (our old backend has not noticed
  we are gone), and that backend is terminated first. Only when the server cannot tell (a failover
  to a standby that never saw it) does the call fail, saying the change may or may not be there.
  Compare-and-set statements would survive a blind retry anyway (they fail as conflicts, which
  callers handle), but inserts would not: the lookup makes both exact.

Not retried: what asking again cannot mend (authentication, an unknown role or database, missing
privileges, SQL errors, an unknown table) and the lock timeout: after 60 s waiting for a row
another launcher holds, that launcher is busy or stuck, not away; waiting minutes more would hide
it, and the callers that can wait (a batch's claim loop) back off themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, TypeVar, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_before_delay,
    wait_exponential_jitter,
)

from launcher.adapters.store.sql import schema
from launcher.adapters.store.sql.coordinator import SqlCoordinator
from launcher.adapters.store.sql.dialect import ColumnTypes, Cursor, Serialised, one
from launcher.errors import InvalidInputError, LauncherError, StateStoreError
from launcher.settings import RECONNECT_ENV, resolve_reconnect_seconds

# How long a statement waits for a row or table lock: the counterpart of SQLite's busy timeout.
LOCK_TIMEOUT_S = 60.0
CONNECT_TIMEOUT_S = 10
# Deadlocks and serialisation failures roll the whole transaction back; run it again this often.
TRANSIENT_RETRIES = 5
# A peer that vanished without a word (a cut network, a paused box) is noticed by the kernel in
# tens of seconds instead of after ~15 minutes of retransmissions: keepalive probes on an idle
# connection, and a bound on data left unacknowledged (libpq names; a URL's own values win).
CONNECTION_DEFAULTS: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 20_000,
}
# Backoff while the server is away: 0.1 s doubling to 2 s, jittered so that the workers of many
# boxes do not all knock at once when it comes back.
_AWAY_WAIT = wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.2)
_CONFLICT_WAIT = wait_exponential_jitter(multiplier=0.01, max=0.5, jitter=0.01)
# Connect failures that are the server's state for a moment, though they come as FATAL.
_CONNECT_TRANSIENT = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "too many clients already",
    "remaining connection slots are reserved",
)
# ...and those that stay until someone changes the URL, the server's configuration or a password.
_CONNECT_PERMANENT = (
    "password",
    "authentication",
    "pg_hba.conf",
    "does not exist",
    "certificate",
    "SSL is not enabled",
    "server does not support SSL",
    "invalid response",
    "invalid connection option",
    "invalid sslmode",
)
_RESOLVE_FAILED = ("failed to resolve host", "could not translate host name")

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

    def __init__(self, url: str, *, reconnect_seconds: float | None = None) -> None:
        self.url = url
        self.where = redact_url(url)
        self.reconnect_seconds = resolve_reconnect_seconds() if reconnect_seconds is None else reconnect_seconds
        # Transactions run again because the server was away or they collided (for tests and
        # for anyone watching): how often, and the last reason.
        self.retries = 0
        self.last_retry: str | None = None
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[DictRow] | None = None
        self._closed = False
        self._closing = threading.Event()
        self._reached = False
        self._budget = threading.local()  # a shorter budget for one thread's calls (reconnecting_for)

    # -- connection and transactions -----------------------------------------------------

    def open(self, setup: Callable[[Cursor], None]) -> None:
        try:
            self.write(setup)
        except BaseException:
            self.close()
            raise

    def _connect(self) -> psycopg.Connection[DictRow]:
        """A new connection; _Away when the server is away for now, StateStoreError when asking
        again cannot help (authentication, an unknown database, a server that is not PostgreSQL)."""
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
            **CONNECTION_DEFAULTS,
        }
        extra = {k: v for k, v in defaults.items() if k not in params}
        try:
            conn = psycopg.connect(self.url, autocommit=False, row_factory=dict_row, **extra)
        except psycopg.Error as exc:
            if _connect_transient(exc, resolved_before=self._reached):
                raise _Away(exc, connecting=True) from exc
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
            if _connection_lost(exc, conn):
                raise _Away(exc, connecting=True) from exc
            raise self._store_error(exc) from exc
        # A name that resolved once is worth resolving again (a box cut off from the network's
        # DNS); one that never did is a typo, and is said at once.
        self._reached = True
        return conn

    def _connection(self) -> psycopg.Connection[DictRow]:
        if self._closed:
            raise StateStoreError(f"the state store {self.where} is closed")
        if self._conn is None or self._conn.closed:
            # A connection the server or the network dropped: the next attempt gets a fresh one.
            self._conn = self._connect()
        return self._conn

    def write(self, body: Callable[[Cursor], _T]) -> _T:
        """Run ``body`` in one transaction: commit if it returns, roll back if it raises.

        Run again while it collides with others or the server is away, within the budget
        (see the module's notes: only transactions known not to have committed are run again)."""
        with self._lock:
            unsettled: _Unsettled | None = None
            try:
                for attempt in self._retrying():
                    with attempt:
                        if unsettled is not None:
                            if self._committed(unsettled):
                                return cast(_T, unsettled.result)
                            unsettled = None
                        try:
                            return self._transaction(body)
                        except _Unsettled as exc:
                            unsettled = exc
                            raise
            except _Away as exc:
                raise self._away_error(exc) from exc.cause
            except psycopg.Error as exc:
                raise self._store_error(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    read = write

    def _transaction(self, body: Callable[[Cursor], _T]) -> _T:
        conn = self._connection()
        pid = conn.info.backend_pid
        try:
            with conn.cursor() as cur:
                result = body(_Statements(cur))
                # Which transaction commits, should the answer to COMMIT never arrive; None: it
                # wrote nothing (no id was assigned), so its outcome does not matter.
                xid: int | None = one(cur.execute("SELECT txid_current_if_assigned() AS xid"))["xid"]
        except BaseException as exc:
            _rollback_quietly(conn)
            if isinstance(exc, psycopg.Error) and _connection_lost(exc, conn):
                raise _Away(exc) from exc  # COMMIT was never sent: nothing was written
            raise
        try:
            conn.commit()
        except psycopg.Error as exc:
            if not _connection_lost(exc, conn):
                _rollback_quietly(conn)
                raise  # the server refused the COMMIT (a serialisation failure): nothing written
            if xid is None:
                raise _Away(exc) from exc
            raise _Unsettled(exc, xid=xid, pid=pid, result=result) from exc
        return result

    def _committed(self, unsettled: _Unsettled) -> bool:
        """Whether the transaction whose COMMIT went unanswered committed; _Away (so: ask again)
        while the server is away or the transaction is still open on a backend of ours."""
        conn = self._connection()
        try:
            status = conn.execute("SELECT txid_status(%s) AS status", (unsettled.xid,)).fetchone()
            state = status["status"] if status else None
            if state == "in progress":
                # Our old backend still holds it open (the server has not noticed we are gone):
                # end it, and look again. Only that backend, and only while it holds that transaction.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE pid = %s AND backend_xid = ((%s::bigint %% 4294967296)::text)::xid",
                    (unsettled.pid, unsettled.xid),
                )
            conn.rollback()
        except psycopg.Error as exc:
            _rollback_quietly(conn)
            if _connection_lost(exc, conn):
                raise _Away(exc) from exc
            state = None  # e.g. "transaction ID … is in the future": a standby that never saw it
        if state == "committed":
            return True
        if state == "aborted":
            return False
        if state == "in progress":
            raise unsettled
        raise StateStoreError(
            f"lost the connection to the PostgreSQL state store {self.where} while a change was being "
            f"committed, and the server cannot tell whether it was ({_first_line(unsettled.cause)})",
            hint="the change may or may not have been made (the server failed over?): look before retrying",
        ) from unsettled.cause

    def _retrying(self) -> Retrying:
        conflicts = 0

        def stop(state: RetryCallState) -> bool:
            nonlocal conflicts
            if _conflict(_exception_of(state)):
                conflicts += 1
                return conflicts > TRANSIENT_RETRIES
            return bool(stop_before_delay(self.budget)(state))

        def wait(state: RetryCallState) -> float:
            chosen = _CONFLICT_WAIT if _conflict(_exception_of(state)) else _AWAY_WAIT
            return float(chosen(state))

        def note(state: RetryCallState) -> None:
            self.retries += 1
            self.last_retry = _first_line(_cause_of(_exception_of(state)))

        return Retrying(
            retry=retry_if_exception(lambda exc: isinstance(exc, _Away) or _conflict(exc)),
            stop=stop,
            wait=wait,
            sleep=self._pause,
            before_sleep=note,
            reraise=True,
        )

    @property
    def budget(self) -> float:
        """How long this thread's calls wait for a server that is away."""
        seconds: float | None = getattr(self._budget, "seconds", None)
        return self.reconnect_seconds if seconds is None else seconds

    @contextmanager
    def reconnecting_for(self, seconds: float) -> Iterator[None]:
        """This thread's calls in the block give up on a server that is away after ``seconds``
        (at most the budget): for a caller whose call must not land much later than it was made."""
        before = getattr(self._budget, "seconds", None)
        self._budget.seconds = min(seconds, self.budget)
        try:
            yield
        finally:
            self._budget.seconds = before

    def _pause(self, seconds: float) -> None:
        # close() (the process stopping) ends the wait: nobody is left to wait for the answer.
        if self._closing.wait(seconds):
            raise StateStoreError(f"the state store {self.where} was closed while waiting for the server")

    def _away_error(self, exc: _Away) -> StateStoreError:
        text = _first_line(exc.cause)
        budget = (
            f"[coordinator] reconnect_seconds (${RECONNECT_ENV}; now {self.reconnect_seconds:g}s) is how long "
            "launcher waits for it"
        )
        if isinstance(exc, _Unsettled):
            return StateStoreError(
                f"lost the connection to the PostgreSQL state store {self.where} while a change was being "
                f"committed, and it did not come back within {self.budget:g}s ({text})",
                hint=f"the change may or may not have been made: look before retrying; {budget}",
            )
        what = "cannot connect to" if exc.connecting else "lost the connection to"
        return StateStoreError(
            f"{what} the PostgreSQL state store {self.where}: {text} (retried for {self.budget:g}s)",
            hint=f"check that the PostgreSQL server is running and reachable from here; {budget}",
        )

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
        if _connection_lost(exc, None):
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
        self._closing.set()
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class PostgresCoordinator(SqlCoordinator):
    def __init__(self, url: str, *, reconnect_seconds: float | None = None) -> None:
        dialect = PostgresDialect(url, reconnect_seconds=reconnect_seconds)
        self.dialect = dialect
        self.reconnecting_for = dialect.reconnecting_for
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


class _Away(Exception):
    """The server went away before this transaction committed (or before it began)."""

    def __init__(self, cause: psycopg.Error, *, connecting: bool = False) -> None:
        super().__init__(_first_line(cause))
        self.cause, self.connecting = cause, connecting


class _Unsettled(_Away):
    """The connection dropped while COMMIT was on its way: transaction ``xid`` may have committed."""

    def __init__(self, cause: psycopg.Error, *, xid: int, pid: int, result: object) -> None:
        super().__init__(cause)
        self.xid, self.pid, self.result = xid, pid, result


def _conflict(exc: BaseException | None) -> bool:
    return isinstance(exc, pg_errors.SerializationFailure | pg_errors.DeadlockDetected)


def _exception_of(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def _cause_of(exc: BaseException | None) -> BaseException:
    return exc.cause if isinstance(exc, _Away) else (exc or RuntimeError("unknown"))


def _connection_lost(exc: psycopg.Error, conn: psycopg.Connection[DictRow] | None) -> bool:
    """The server went away (shut down, terminated this backend, network gone), not a statement error."""
    if isinstance(
        exc,
        pg_errors.AdminShutdown
        | pg_errors.CrashShutdown
        | pg_errors.CannotConnectNow
        | pg_errors.IdleSessionTimeout
        | pg_errors.IdleInTransactionSessionTimeout,
    ):
        return True
    if not isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError):
        return False
    if exc.sqlstate is not None:
        return exc.sqlstate.startswith("08")  # class 08: connection exception
    # No SQLSTATE: libpq's own errors. Only a connection that is gone counts (not a misuse).
    return conn is None or conn.closed or conn.broken


def _connect_transient(exc: psycopg.Error, *, resolved_before: bool) -> bool:
    """Whether a failed connect is the server or the network being away for now. libpq gives no
    SQLSTATE here: its message is all there is."""
    text = str(exc)
    if any(marker in text for marker in _CONNECT_TRANSIENT):
        return True
    if any(marker in text for marker in _CONNECT_PERMANENT) or "FATAL:" in text:
        return False
    if any(marker in text for marker in _RESOLVE_FAILED):
        return resolved_before
    return True  # refused, timed out, reset, no route: a server restarting or a network cut


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

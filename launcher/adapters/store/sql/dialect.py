"""What differs between the SQL backends, and nothing else.

The coordinator's statements are written once, with ``?`` placeholders (a dialect whose driver
wants another style translates them; no statement contains a literal ``?`` or ``%``), and read
columns by name only: sqlite3.Row and psycopg's dict rows both allow that. Statements are put
together from the coordinator's own text and a dialect's constant fragments (the ``noqa: S608``
sites), never from a caller's values, which always travel as parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, TypeVar

from launcher.errors import StateStoreError

_T = TypeVar("_T")

# Points where concurrent transactions must queue: schema migration, the global run number (gap
# free, like MAX + 1) and the subnet slots ("lowest free" read and insert must not interleave).
Serialised = Literal["migration", "run-seq", "subnet"]


class Result(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> Sequence[Any]: ...


class Cursor(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = (), /) -> Result: ...


@dataclass(frozen=True)
class ColumnTypes:
    """Column types of the schema, by role."""

    integer: str
    """A 64-bit integer."""
    flag: str
    """A boolean column that is false unless set, with its NOT NULL and default."""
    timestamp: str
    """A timestamp with its time zone (ISO-8601 text where there is no such type)."""
    real: str
    """A double-precision number."""
    serial: str
    """An auto-numbered primary key, never reusing a number."""
    stamp_default: str
    """What follows ``NOT NULL`` of a column the server stamps on insert, if it can."""


class Dialect(Protocol):
    where: str
    """The store as messages name it (a path, a URL without its password)."""
    types: ColumnTypes
    collate: str
    """Follows a TEXT sort key so that every backend orders by bytes."""
    greatest: str
    """The two-argument maximum function."""
    for_update: str
    """Follows a SELECT of a row the transaction goes on to change, to lock it."""
    claim_locks: tuple[str, ...]
    """Each follows the claim's SELECT in turn until one finds a row."""
    clock: str
    """SQL for the coordinator's clock now, as a timestamp column stores it."""
    epoch: str
    """SQL for the coordinator's clock now, in unix seconds (lease expiries)."""

    def open(self, setup: Callable[[Cursor], None]) -> None:
        """Connect and run ``setup`` (the migration) in a write transaction; closed if that fails."""
        ...

    def write(self, body: Callable[[Cursor], _T]) -> _T:
        """Run ``body`` in one write transaction: committed if it returns, rolled back if it raises.

        ``body`` may run more than once (a dialect retries transient aborts), so it must start
        from scratch each time.
        """
        ...

    def read(self, body: Callable[[Cursor], _T]) -> _T: ...

    def now(self, cur: Cursor) -> datetime:
        """The coordinator's clock, read once to stamp several columns alike."""
        ...

    def stamp(self, value: datetime) -> Any:
        """A timestamp as a statement parameter."""
        ...

    def serialise(self, cur: Cursor, point: Serialised) -> None:
        """Queue this transaction behind others at ``point`` until it ends."""
        ...

    def has_table(self, cur: Cursor, name: str) -> bool: ...

    def close(self) -> None: ...


def one(result: Result) -> Any:
    row = result.fetchone()
    if row is None:  # pragma: no cover - every caller's statement returns exactly one row
        raise StateStoreError("the state store returned no row where one was expected")
    return row

"""State store backends. ``open_coordinator`` picks one from a URL and imports only it."""

from __future__ import annotations

from pathlib import Path

from launcher.core.ports import Coordinator
from launcher.errors import InvalidInputError


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_coordinator(url: str, *, create: bool = True, reconnect_seconds: float | None = None) -> Coordinator:
    """The store at ``url``. ``create=False`` (read-only commands): a SQLite file that does not
    exist is a NoStateStoreError, and nothing is made; a database server is opened as usual.
    ``reconnect_seconds``: how long a database server's calls ride out its absence (None: the
    environment's, else the default)."""
    if url.startswith("sqlite:///"):
        from launcher.adapters.store.sqlite import SqliteCoordinator

        return SqliteCoordinator(Path(url.removeprefix("sqlite:///")), create=create)
    if url.startswith(("postgresql://", "postgres://")):
        from launcher.adapters.store.postgres import PostgresCoordinator

        return PostgresCoordinator(url, reconnect_seconds=reconnect_seconds)
    raise InvalidInputError(f"unsupported state URL {url!r}", hint="use sqlite:///ABSOLUTE/PATH or postgresql://...")


def empty_coordinator() -> Coordinator:
    """An empty store that lives outside every case root until it is closed."""
    from launcher.adapters.store.sqlite import EmptySqliteCoordinator

    return EmptySqliteCoordinator()


__all__ = ["Coordinator", "empty_coordinator", "open_coordinator", "sqlite_url"]

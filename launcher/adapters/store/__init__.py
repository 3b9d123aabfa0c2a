"""State store backends. ``open_coordinator`` picks one from a URL and imports only it."""

from __future__ import annotations

from pathlib import Path

from launcher.core.ports import Coordinator
from launcher.errors import InvalidInputError


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def open_coordinator(url: str) -> Coordinator:
    if url.startswith("sqlite:///"):
        from launcher.adapters.store.sqlite import SqliteCoordinator

        return SqliteCoordinator(Path(url.removeprefix("sqlite:///")))
    if url.startswith(("postgresql://", "postgres://")):
        from launcher.adapters.store.postgres import PostgresCoordinator

        return PostgresCoordinator(url)
    raise InvalidInputError(f"unsupported state URL {url!r}", hint="use sqlite:///ABSOLUTE/PATH or postgresql://...")


__all__ = ["Coordinator", "open_coordinator", "sqlite_url"]

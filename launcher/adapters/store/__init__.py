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
        raise InvalidInputError(
            "the PostgreSQL coordinator is not available in this version of launcher",
            hint="use the embedded SQLite default (omit --state-url)",
        )
    raise InvalidInputError(f"unsupported state URL {url!r}", hint="use sqlite:///ABSOLUTE/PATH or postgresql://...")


__all__ = ["Coordinator", "open_coordinator", "sqlite_url"]

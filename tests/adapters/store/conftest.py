"""Fixtures for the store suite: one coordinator contract, every backend.

``coordinator_url`` (and ``store``, an open coordinator on it) is parametrised over the
backends: ``sqlite`` (a file in the test's tmp dir) and ``postgres`` (a fresh database on the
session's throwaway server, see ``tests/pg.py``). The PostgreSQL server is started only when a
``postgres`` case runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg import PgServer, pg_server

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.core.ports import Coordinator

__all__ = ["coordinator_url", "pg_server", "store"]

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def coordinator_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "state.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as url:
        yield url


@pytest.fixture
def store(coordinator_url: str) -> Iterator[Coordinator]:
    coordinator = open_coordinator(coordinator_url)
    try:
        yield coordinator
    finally:
        coordinator.close()

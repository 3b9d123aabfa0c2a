"""Opening a fresh state store while another connection is writing to it.

Several launchers started at once on a fresh case root (a CI matrix, `launcher batch` on a
new box) all open `.launcher/state.db` together; the first to switch it to WAL mode holds a
write lock for a moment. The coordinator promises to wait for locks up to its busy timeout
rather than fail, so an opener that meets that lock must wait, not give up at once.

Found with the 16-process ID race on a fresh root: about one run in ten, a worker died within
a millisecond in `PRAGMA journal_mode = WAL` with "database is locked", reported as "stayed
locked for 60s". SQLite does not call the busy handler when a read transaction has to be
upgraded to a write one, which is what the switch to WAL does on a database still in
rollback mode. This test makes the other writer hold its lock long enough to hit that
window every time.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from launcher.adapters.store.sqlite import SCHEMA_VERSION, SqliteCoordinator
from launcher.models import NewTask

HOLD_S = 0.5


def test_opening_a_fresh_store_waits_for_a_concurrent_writer(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    # Another connection creates the file (still in rollback-journal mode, as every fresh
    # SQLite file starts) and is in the middle of a write transaction.
    other = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("CREATE TABLE other_writer (x INTEGER)")
    release = threading.Timer(HOLD_S, lambda: other.execute("COMMIT"))
    release.start()
    started = time.monotonic()
    try:
        store = SqliteCoordinator(path)
    finally:
        release.join()
        other.close()
    waited = time.monotonic() - started
    try:
        assert waited >= HOLD_S * 0.8, "the store opened while another connection held the write lock"
        task = store.create_task(
            NewTask(prefix="demo", slug="after-wait", title="t", repo="demo", doc={"status": "active"})
        )
        assert task.id == "demo-1-after-wait"
    finally:
        store.close()
    check = sqlite3.connect(str(path))
    try:
        assert check.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        assert check.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert check.execute("SELECT COUNT(*) FROM other_writer").fetchone() == (0,)  # its work survived
    finally:
        check.close()

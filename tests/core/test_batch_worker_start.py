"""A batch whose coordinator drops connections while its workers connect still starts them; a
task that cannot even be planned is reported once and taken off the queue, not claimed forever."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

from fakes import FakeWorld

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.core.batch import COORDINATOR_RETRIES, Batch, BatchOptions
from launcher.core.ports import Coordinator
from launcher.core.run import RunService
from launcher.errors import StateStoreError
from launcher.models import RunOwner


def _batch(world: FakeWorld, failures: int) -> tuple[Batch, list[int]]:
    calls, lock = [0], threading.Lock()

    def make_worker() -> tuple[Coordinator, RunService]:
        with lock:
            calls[0] += 1
            if calls[0] <= failures:
                raise StateStoreError("lost the connection to the PostgreSQL state store (server closed it)")
        # Each worker has a connection of its own, as batch_cmd gives them.
        store = SqliteCoordinator(world.deps.state_dir / "state.db")
        return store, RunService(dataclasses.replace(world.deps, store=store))

    options = BatchOptions(parallel=1, poll_seconds=0.01, reconnect_seconds=0.5)
    batch = Batch(make_worker, RunOwner(host="h", pid=1), options, lambda _owner: None, lambda _event: None)
    return batch, calls


def test_connections_dropped_while_workers_connect_are_waited_for(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path)
    task = world.new_task("queued")
    world.store.enqueue([task])
    batch, calls = _batch(world, failures=2)

    summary = batch.run()

    # The fake world has no egress proxy: the task is refused at planning, which is the task's
    # defect (not the coordinator's), said once.
    assert summary.claimed == 1, "started despite the dropped connections, and claimed the task once"
    assert calls[0] >= 3
    (error,) = summary.errors
    assert "no egress proxy" in error
    assert f"launcher queue {task}" in error
    assert not world.store.get_task(task).queued


def test_a_coordinator_that_stays_away_is_reported(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path)
    batch, _ = _batch(world, failures=1000)

    summary = batch.run()

    assert any("worker 0 could not start" in e for e in summary.errors), summary.errors
    assert any("lease heartbeat could not start" in e for e in summary.errors), summary.errors
    assert len(summary.errors) == 2, f"after {COORDINATOR_RETRIES} retries each, said once each"

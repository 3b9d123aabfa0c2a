"""What a build box shows between batch events, without Docker: the idle heartbeat of a watching
batch, the summary sentence, the live table's progress line, and the health probe of the compose
healthcheck. A real SQLite coordinator in a temp dir; no run is ever started (the queue is empty,
or the table is fed events)."""

from __future__ import annotations

import itertools
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from helpers import wait_for

from launcher.adapters.metrics_probe import probe
from launcher.adapters.procinfo import current_owner
from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.cli.batch_cmd import LiveTable, event_line, summary_text
from launcher.core.batch import Batch, BatchEvent, BatchOptions, BatchSummary
from launcher.core.metrics import batch_registry, serve
from launcher.core.ports import Coordinator
from launcher.core.run import RunService
from launcher.models import NewTask, utcnow


@pytest.fixture
def state_url(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "state.db")
    open_coordinator(url).close()
    return url


class Ticks:
    """What the batch told its metrics about its main loop (the other hooks are not asked here)."""

    def __init__(self) -> None:
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def watching_batch(state_url: str, events: list[BatchEvent], **options: Any) -> tuple[Batch, threading.Thread]:
    def make_worker() -> tuple[Coordinator, RunService]:
        # No task is ever claimed: the run service is never asked for anything.
        return open_coordinator(state_url), cast(RunService, object())

    batch = Batch(
        make_worker,
        current_owner(),
        BatchOptions(watch=True, poll_seconds=0.05, lease_seconds=2, **options),
        lambda owner: None,
        events.append,
        metrics=cast(Any, Ticks()),
    )
    thread = threading.Thread(target=batch.run, daemon=True)
    thread.start()
    return batch, thread


def test_a_watching_batch_with_an_empty_queue_says_it_is_idle_every_interval(state_url: str) -> None:
    events: list[BatchEvent] = []
    batch, thread = watching_batch(state_url, events, parallel=2, idle_seconds=0.3)
    try:

        def three_idle() -> list[BatchEvent] | None:
            idle = [e for e in events if e.kind == "idle"]
            return idle[:3] if len(idle) >= 3 else None

        idle = wait_for(three_idle, timeout=30, what="three idle events")
    finally:
        batch.stopping.set()
        thread.join(timeout=30)
    assert not thread.is_alive()
    # One line for the whole batch (not one per worker), each saying what it waits for.
    assert {(e.task_id, e.worker, e.detail) for e in idle} == {(None, -1, "queue empty, 0 done, waiting")}
    gaps = [(b.at - a.at).total_seconds() for a, b in itertools.pairwise(idle)]
    assert all(gap >= 0.29 for gap in gaps), gaps
    assert cast(Ticks, batch.metrics).ticks > 0  # the main loop's heartbeat (launcher_batch_heartbeat_…)
    assert event_line(idle[0]).endswith("[batch] idle     (queue empty, 0 done, waiting)")


def test_idle_0_says_nothing(state_url: str) -> None:
    events: list[BatchEvent] = []
    batch, thread = watching_batch(state_url, events, idle_seconds=0)
    try:
        wait_for(lambda: cast(Ticks, batch.metrics).ticks >= 10, timeout=30, what="the main loop to go round")
    finally:
        batch.stopping.set()
        thread.join(timeout=30)
    assert [e for e in events if e.kind == "idle"] == []


@pytest.mark.parametrize(
    ("summary", "text"),
    [
        (
            BatchSummary(claimed=3, runs=3, by_state={"exited": 3}),
            "batch: 3 tasks claimed, 3 runs started, none retried; 3 runs exited",
        ),
        (
            BatchSummary(claimed=2, runs=3, retried=1, by_state={"exited": 1, "failed": 1}),
            "batch: 2 tasks claimed, 3 runs started, 1 run retried; 1 run exited, 1 run failed",
        ),
        # Nothing ended: no `;` left hanging.
        (BatchSummary(), "batch: 0 tasks claimed, 0 runs started, none retried"),
        (BatchSummary(claimed=1, runs=1), "batch: 1 task claimed, 1 run started, none retried"),
    ],
)
def test_the_summary_sentence(summary: BatchSummary, text: str) -> None:
    assert summary_text(summary) == text


def event(kind: str, task: str, **fields: Any) -> BatchEvent:
    return BatchEvent(kind=kind, task_id=task, worker=0, at=utcnow(), **fields)  # type: ignore[arg-type]


def test_the_live_table_shows_elapsed_done_remaining_and_an_estimate(state_url: str) -> None:
    store = open_coordinator(state_url)
    try:
        ids = [
            store.create_task(NewTask(prefix="demo", slug=f"t{i}", title="t", repo="demo", queued=True, doc={})).id
            for i in range(4)
        ]
        now = [1000.0]
        table = LiveTable(lambda: store, clock=lambda: now[0])
        assert table.progress() == "elapsed 0s · 0 done · 4 remaining"
        for task in ids[:2]:
            table.update(event("claimed", task))
            table.update(event("finished", task, state="exited"))
        table.update(event("claimed", ids[2]))
        # Two of the four done and off the queue after 60s: two to go at that pace, ~60s.
        _dequeue(store, ids[:2])
        now[0] += 60
        assert table.progress() == "elapsed 1m00s · 2 done · 2 remaining · ~1m00s left"
        # The depth is asked at most every 2s; the rest is the table's own count.
        table.update(event("finished", ids[2], state="failed"))
        assert table.progress() == "elapsed 1m00s · 3 done · 2 remaining · ~40s left"
        # An idle line goes under the table, not in a row.
        table.update(BatchEvent(kind="idle", task_id=None, worker=-1, at=utcnow(), detail="queue empty"))
        assert table.progress().startswith("elapsed 1m00s · 3 done")
    finally:
        store.close()


def _dequeue(store: Coordinator, task_ids: list[str]) -> None:
    """Off the queue as a batch takes a finished task off: claimed, then released as done."""
    for task_id in task_ids:
        store.claim_task(task_id, "test-holder", 60)
        assert store.release_claim(task_id, "test-holder", done=True)


def test_the_health_probe_reads_a_batch_metrics_endpoint(state_url: str) -> None:
    store = open_coordinator(state_url)
    registry, metrics = batch_registry(store, parallel=1)
    _, port, stop = serve(registry, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        assert probe(url, 30) is None
        later = utcnow() + timedelta(seconds=120)
        assert "went round 120s ago" in (probe(url, 30, now=later.timestamp()) or "")
        metrics.expired(1)
        assert probe(url, 30) == "the batch is paused: it cannot renew its leases with the coordinator"
        metrics.resumed()
        assert probe(url, 30) is None
    finally:
        stop()
        store.close()
    assert "does not answer" in (probe(url, 30) or "")
    assert probe("file:///etc/passwd", 30) == "file:///etc/passwd: not an http(s) URL"

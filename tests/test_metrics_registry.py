"""launcher.core.metrics without Docker: the coordinator's figures at scrape time, a batch's counters,
and the HTTP endpoint they are served on. A real SQLite coordinator in a temp dir."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.core.metrics import BatchMetrics, batch_registry, coordinator_registry, serve
from launcher.core.ports import Coordinator
from launcher.core.transitions import RunState
from launcher.errors import StateStoreError
from launcher.models import NewRun, NewTask, RunRecord, utcnow


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Coordinator]:
    coordinator = open_coordinator(sqlite_url(tmp_path / "state.db"))
    yield coordinator
    coordinator.close()


def samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, parsed back from the exposition text Prometheus reads."""
    text = generate_latest(registry).decode()
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return samples(registry).get((name, tuple(sorted(labels.items()))))


def new_task(store: Coordinator, slug: str, *, queued: bool = True) -> str:
    return store.create_task(
        NewTask(prefix="demo", slug=slug, title=slug, repo="demo", queued=queued, doc={"title": slug})
    ).id


def new_run(store: Coordinator, task: str, state: RunState, **changes: object) -> RunRecord:
    run = store.create_run(NewRun(task_id=task, image=None, owner=None, worktrees_dir="/nonexistent/wt"))
    return store.update_run(run.id, state=state, **changes)


def test_an_empty_coordinator_says_up_and_zeros(store: Coordinator) -> None:
    registry = coordinator_registry(store)
    assert value(registry, "launcher_coordinator_up") == 1
    assert value(registry, "launcher_queue_depth") == 0
    assert value(registry, "launcher_live_runs") == 0
    # Every state is there at 0: a query for one that never happened is 0, not "no data".
    assert value(registry, "launcher_runs", state="superseded") == 0
    assert value(registry, "launcher_tasks", status="merged") == 0
    assert value(registry, "launcher_recorded_egress_denials_total") == 0


def test_queue_runs_and_denials_are_read_at_scrape_time(store: Coordinator) -> None:
    registry = coordinator_registry(store)  # made before anything exists: nothing is cached
    tasks = [new_task(store, f"t{i}") for i in range(3)]
    new_task(store, "not-queued", queued=False)
    claimed = store.claim_next("box:1:2:0", 60)
    assert claimed is not None
    new_run(store, tasks[0], RunState.RUNNING, started_at=utcnow())
    new_run(store, tasks[1], RunState.PREPARING)
    ended = utcnow()
    new_run(
        store,
        tasks[2],
        RunState.EXITED,
        exit_code=0,
        started_at=ended - timedelta(seconds=5),
        ended_at=ended,
        details={"egress": {"denied_decisions": 4}},
    )
    new_run(store, tasks[2], RunState.FAILED, exit_code=3, details={"egress": {"denied_decisions": 2}})

    assert value(registry, "launcher_queue_depth") == 3
    assert value(registry, "launcher_queue_leased") == 1
    assert value(registry, "launcher_queue_waiting") == 2
    assert value(registry, "launcher_live_runs") == 2
    assert value(registry, "launcher_runs", state="running") == 1
    assert value(registry, "launcher_runs", state="exited") == 1
    assert value(registry, "launcher_runs", state="failed") == 1
    assert value(registry, "launcher_tasks", status="active") == 4
    assert value(registry, "launcher_recorded_egress_denials_total") == 6

    # The task done: off the queue at the next scrape.
    assert store.release_claim(claimed.id, "box:1:2:0", done=True)
    assert value(registry, "launcher_queue_depth") == 2
    assert value(registry, "launcher_queue_leased") == 0


class AwayCoordinator:
    def list_tasks(self) -> list[object]:
        raise StateStoreError("the coordinator is away")

    def list_runs(self) -> list[object]:
        raise AssertionError("not reached")


def test_a_coordinator_that_is_away_makes_up_0_not_a_failed_scrape() -> None:
    registry = coordinator_registry(AwayCoordinator())  # type: ignore[arg-type]
    scraped = samples(registry)
    assert scraped == {("launcher_coordinator_up", ()): 0.0}


def run_record(store: Coordinator, *, launch: float, duration: float, denied: int) -> tuple[RunRecord, float]:
    task = new_task(store, f"r{launch}")
    started = utcnow()
    run = new_run(
        store,
        task,
        RunState.EXITED,
        exit_code=0,
        started_at=started,
        ended_at=started + timedelta(seconds=duration),
        details={"egress": {"denied_decisions": denied}},
    )
    return run, started.timestamp() - launch


def test_batch_metrics_count_what_the_batch_saw(store: Coordinator) -> None:
    registry, metrics = batch_registry(None, parallel=3)
    assert value(registry, "launcher_batch_workers") == 3
    assert value(registry, "launcher_runs_finished_total", result="exited") == 0  # there before the first

    metrics.claimed()
    metrics.run_started()
    assert value(registry, "launcher_batch_busy_workers") == 1
    run, claimed_at = run_record(store, launch=1.5, duration=42, denied=7)
    metrics.run_finished(run, "exited", claimed_at)
    metrics.run_finished(run, "publish-failed", claimed_at)
    metrics.released()
    for outcome in ("renewed", "renewed", "error", "lost"):
        metrics.renewal(outcome)
    metrics.takeover("lost")
    metrics.expired(2)
    assert value(registry, "launcher_batch_paused") == 1
    metrics.resumed()

    assert value(registry, "launcher_runs_started_total") == 1
    assert value(registry, "launcher_runs_finished_total", result="exited") == 1
    assert value(registry, "launcher_runs_finished_total", result="publish-failed") == 1
    assert value(registry, "launcher_batch_busy_workers") == 0
    assert value(registry, "launcher_batch_paused") == 0
    assert value(registry, "launcher_lease_renewals_total", outcome="renewed") == 2
    assert value(registry, "launcher_lease_renewals_total", outcome="error") == 1
    assert value(registry, "launcher_lease_takeovers_total", side="lost") == 1
    assert value(registry, "launcher_lease_takeovers_total", side="taken") == 0
    assert value(registry, "launcher_lease_expiries_total") == 2
    assert value(registry, "launcher_egress_denials_total") == 14
    assert value(registry, "launcher_launch_latency_seconds_count") == 2
    assert value(registry, "launcher_launch_latency_seconds_bucket", le="1.0") == 0
    assert value(registry, "launcher_launch_latency_seconds_bucket", le="2.0") == 2
    assert value(registry, "launcher_run_duration_seconds_sum") == pytest.approx(84, abs=0.01)
    assert value(registry, "launcher_run_duration_seconds_bucket", le="30.0") == 0
    assert value(registry, "launcher_run_duration_seconds_bucket", le="60.0") == 2


def test_a_run_that_never_ran_adds_no_latency_or_duration(store: Coordinator) -> None:
    registry = CollectorRegistry()
    metrics = BatchMetrics(registry, parallel=1)
    run = new_run(store, new_task(store, "never"), RunState.FAILED, exit_code=None)
    metrics.run_finished(run, "failed", claimed_at=0.0)
    assert value(registry, "launcher_runs_finished_total", result="failed") == 1
    assert value(registry, "launcher_launch_latency_seconds_count") == 0
    assert value(registry, "launcher_run_duration_seconds_count") == 0


def test_the_batch_registry_serves_both_kinds_over_http_on_a_port_it_picks(store: Coordinator) -> None:
    new_task(store, "waiting")
    registry, metrics = batch_registry(store, parallel=2)
    metrics.run_started()
    host, port, stop = serve(registry, "127.0.0.1", 0)
    try:
        assert (host, port > 0) == ("127.0.0.1", True)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        stop()
    scraped = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert scraped[("launcher_queue_depth", ())] == 1
    assert scraped[("launcher_runs_started_total", ())] == 1
    assert scraped[("launcher_coordinator_up", ())] == 1
    assert all(name.startswith("launcher_") for name, _ in scraped), sorted({n for n, _ in scraped})

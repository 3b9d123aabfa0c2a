"""Prometheus metrics: what the coordinator knows, computed at scrape time, and what a batch counts.

Two kinds, kept apart because they come from different places:

- ``coordinator_registry(store)``: gauges read from the coordinator when Prometheus scrapes
  (queue depth, runs by state, tasks by status). Any process that can open the coordinator can
  serve them (``launcher web``, a batch); they agree across processes because they are the
  coordinator's own figures, and nothing is counted in memory.
- ``BatchMetrics``: what one batch process saw happen (runs started and finished by result,
  lease renewals and expiries, launch latency, run duration, egress denials), as counters and
  histograms fed by the batch as it goes. Prometheus sums them over workers (``sum by``).

prometheus_client is imported here only, and this module only when metrics are asked for, so
``launcher --help`` does not pay for it.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from launcher.core.transitions import LIVE_RUN_STATES, RunState, TaskStatus

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from launcher.core.ports import Coordinator
    from launcher.models import RunRecord

# Launch latency (claim to `running`) covers a worktree, a network and a container start: seconds
# on a warm box, a minute with an image pull. Run duration is the agent's: seconds to hours.
LAUNCH_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, float("inf"))
DURATION_BUCKETS = (1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, float("inf"))


class CoordinatorCollector(Collector):
    """The coordinator's figures, read afresh at every scrape (one query each for tasks and runs).

    A coordinator that is away makes ``launcher_coordinator_up`` 0 and the rest absent from that
    scrape, rather than failing the scrape: Prometheus then still sees the process's own metrics.
    """

    def __init__(self, store: Coordinator, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        # One scrape at a time: the HTTP server answers each request on a thread of its own, and a
        # coordinator connection is not to be used by two threads at once.
        self._lock = threading.Lock()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # computed at scrape time: nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        started = time.monotonic()
        up = GaugeMetricFamily("launcher_coordinator_up", "1 when the coordinator answered this scrape, 0 otherwise")
        try:
            with self._lock:
                tasks = self._store.list_tasks()
                runs = self._store.list_runs()
        except Exception:  # any failure of the store is "down" for the scrape
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        now = self._clock()

        queued = [t for t in tasks if t.queued]
        leased = sum(1 for t in queued if t.lease_owner and t.lease_expires is not None and t.lease_expires > now)
        depth = GaugeMetricFamily(
            "launcher_queue_depth", "Tasks queued for a batch and not done yet (claimed or waiting)"
        )
        depth.add_metric([], len(queued))
        yield depth
        held = GaugeMetricFamily(
            "launcher_queue_leased", "Queued tasks a batch worker holds under an unexpired lease (being run)"
        )
        held.add_metric([], leased)
        yield held
        waiting = GaugeMetricFamily("launcher_queue_waiting", "Queued tasks no worker holds: waiting to be claimed")
        waiting.add_metric([], len(queued) - leased)
        yield waiting

        by_state = Counter(r.state.value for r in runs)
        live = GaugeMetricFamily("launcher_live_runs", "Runs in a live state (created, preparing, running)")
        live.add_metric([], sum(by_state[s.value] for s in LIVE_RUN_STATES))
        yield live
        per_state = GaugeMetricFamily("launcher_runs", "Runs the coordinator records, by state", labels=["state"])
        for state in RunState:
            per_state.add_metric([state.value], by_state[state.value])
        yield per_state

        by_status = Counter(t.status.value for t in tasks)
        per_status = GaugeMetricFamily("launcher_tasks", "Tasks by status", labels=["status"])
        for status in TaskStatus:
            per_status.add_metric([status.value], by_status[status.value])
        yield per_status

        # From the runs' records, so a counter over the whole history (it only drops if records
        # are deleted, which Prometheus's rate() reads as a counter reset).
        denied = CounterMetricFamily(
            "launcher_recorded_egress_denials",
            "Egress proxy refusals recorded over every settled run the coordinator keeps",
        )
        denied.add_metric([], sum(_denied(r) for r in runs))
        yield denied

        took = GaugeMetricFamily(
            "launcher_coordinator_scrape_seconds", "How long reading the coordinator took for this scrape"
        )
        took.add_metric([], time.monotonic() - started)
        yield took


def coordinator_registry(store: Coordinator) -> CollectorRegistry:
    """A registry of the coordinator's own figures, computed at scrape time (see module doc).

    Serve it with prometheus_client (``generate_latest(registry)``, ``make_asgi_app(registry)``,
    ``start_http_server(port, registry=registry)``). ``store`` is used from the serving thread(s),
    one scrape at a time: give it a connection of its own.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(CoordinatorCollector(store))
    return registry


class BatchMetrics:
    """What one batch process counts, fed by the batch (``Batch(..., metrics=...)``)."""

    def __init__(self, registry: CollectorRegistry, parallel: int) -> None:
        self.registry = registry
        self.started = PromCounter(
            "launcher_runs_started", "Runs this batch started (created for a claimed task)", registry=registry
        )
        self.finished = PromCounter(
            "launcher_runs_finished",
            "Runs this batch saw end, by result (the run's final state, or publish-failed)",
            ["result"],
            registry=registry,
        )
        self.claims = PromCounter("launcher_tasks_claimed", "Tasks this batch claimed", registry=registry)
        self.renewals = PromCounter(
            "launcher_lease_renewals",
            "Lease renewals this batch asked for, by outcome (renewed; lost: another holder has it; "
            "error: the coordinator did not answer)",
            ["outcome"],
            registry=registry,
        )
        self.expiries = PromCounter(
            "launcher_lease_expiries",
            "Leases of this batch that went unrenewed for longer than the lease (the coordinator was away)",
            registry=registry,
        )
        self.takeovers = PromCounter(
            "launcher_lease_takeovers",
            "Claims taken over: lost (another batch took a task of this one over), "
            "taken (this batch took over a task whose holder's lease expired, settling its runs left behind)",
            ["side"],
            registry=registry,
        )
        self.retries = PromCounter(
            "launcher_run_retries", "Attempts retried after an infrastructure failure", registry=registry
        )
        self.errors = PromCounter("launcher_batch_errors", "Errors the batch reported", registry=registry)
        self.denials = PromCounter(
            "launcher_egress_denials",
            "Egress proxy refusals of the runs this batch finished (each refused request counts)",
            registry=registry,
        )
        self.launch = Histogram(
            "launcher_launch_latency_seconds",
            "From a task's claim to its run's agent running (worktree, network, container start)",
            buckets=LAUNCH_BUCKETS,
            registry=registry,
        )
        self.duration = Histogram(
            "launcher_run_duration_seconds",
            "From a run's agent running to the run's end, of the runs this batch finished",
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.busy = Gauge("launcher_batch_busy_workers", "Workers of this batch on a task now", registry=registry)
        workers = Gauge("launcher_batch_workers", "Workers of this batch (--parallel)", registry=registry)
        workers.set(parallel)
        self.paused = Gauge(
            "launcher_batch_paused",
            "1 while this batch claims nothing because its leases could not be renewed",
            registry=registry,
        )
        self.heartbeat = Gauge(
            "launcher_batch_heartbeat_timestamp_seconds",
            "When the batch's main loop last went round (unix time): a stale value is a stuck batch",
            registry=registry,
        )
        self.heartbeat.set_to_current_time()
        for result in ("exited", "failed"):
            self.finished.labels(result)  # present at 0 from the start, so rate() sees the first one
        for outcome in ("renewed", "lost", "error"):
            self.renewals.labels(outcome)
        for side in ("lost", "taken"):
            self.takeovers.labels(side)

    # -- fed by Batch ------------------------------------------------------------------

    def claimed(self) -> None:
        self.claims.inc()
        self.busy.inc()

    def released(self) -> None:
        self.busy.dec()

    def run_started(self) -> None:
        self.started.inc()

    def run_finished(self, run: RunRecord, result: str, claimed_at: float) -> None:
        """``claimed_at``: unix time of the claim the run went under."""
        self.finished.labels(result).inc()
        if run.started_at is not None:
            self.launch.observe(max(run.started_at.timestamp() - claimed_at, 0.0))
            if run.ended_at is not None:
                self.duration.observe(max((run.ended_at - run.started_at).total_seconds(), 0.0))
        denied = _denied(run)
        if denied:
            self.denials.inc(denied)

    def renewal(self, outcome: str) -> None:
        self.renewals.labels(outcome).inc()

    def expired(self, leases: int) -> None:
        self.expiries.inc(leases)
        self.paused.set(1)

    def resumed(self) -> None:
        self.paused.set(0)

    def takeover(self, side: str) -> None:
        self.takeovers.labels(side).inc()

    def retried(self) -> None:
        self.retries.inc()

    def error(self) -> None:
        self.errors.inc()

    def tick(self) -> None:
        self.heartbeat.set_to_current_time()


def batch_registry(store: Coordinator | None, parallel: int) -> tuple[CollectorRegistry, BatchMetrics]:
    """The registry a batch serves: the coordinator's figures (when given a connection for them)
    and the batch's own counters."""
    registry = coordinator_registry(store) if store is not None else CollectorRegistry(auto_describe=False)
    return registry, BatchMetrics(registry, parallel)


def serve(registry: CollectorRegistry, host: str, port: int) -> tuple[str, int, Callable[[], None]]:
    """Serve ``registry`` at http://host:port/metrics on a daemon thread; port 0 picks a free one.
    Returns the host and port bound, and what stops the server."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(port, addr=host, registry=registry)
    bound = server.server_address
    actual_port = int(bound[1])

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return host, actual_port, stop


def _denied(run: RunRecord) -> int:
    egress = run.details.egress
    return (egress.denied_decisions or 0) if egress is not None else 0

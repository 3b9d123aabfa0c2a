"""Unattended batches: claim queued tasks, run each as an isolated run, never twice.

Each worker thread has its own coordinator connection and run service. A claim is a lease
renewed by a heartbeat while the run lives; a batch that dies stops renewing, its leases
expire, and another batch (or a restart) reclaims the tasks, settles the runs left behind
as lost, and does not rerun a task whose run already finished.

Only infrastructure failures are retried (Docker API errors, git lock contention, a
coordinator that stayed locked), with backoff; an agent's non-zero exit is a result.

A coordinator that goes away (a PostgreSQL restart, a failover, a box cut off for a moment) is
ridden out: every store call retries it for ``[coordinator] reconnect_seconds``, and the claim
loop and the workers' start back off for as long again before a worker gives up, saying so.
The heartbeat knows when each lease was last renewed: while one has gone unrenewed for longer
than the lease (another batch may have taken the task over by now), the pool claims nothing new
(``coordinator-lost``) until the coordinator answers again (``coordinator-back``). Runs in
progress go on: a run whose claim was taken over meanwhile is fenced when it settles.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from pydantic import BaseModel, Field
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_exponential_jitter,
)

from launcher.core.ports import Coordinator
from launcher.core.run import RunRequest, RunService, is_infrastructure_error
from launcher.core.run.publish import publish_failed
from launcher.core.transitions import LIVE_RUN_STATES, RunState
from launcher.errors import LauncherError, LockTimeoutError, StateStoreError
from launcher.models import RunOwner, RunRecord, TaskRecord, utcnow
from launcher.settings import DEFAULT_RECONNECT_SECONDS, RECONNECT_ENV, AgentProfile

# A coordinator call that fails at once is tried for reconnect_seconds, and at least this often
# (a short budget still gets a few tries); one that took the whole budget itself is not.
COORDINATOR_RETRIES = 5
# What a coordinator that is away (or busy) raises; other errors are not worth waiting for.
COORDINATOR_ERRORS = (StateStoreError, LockTimeoutError)
_T = TypeVar("_T")
FINISHED = frozenset(
    {
        RunState.EXITED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.UNHARVESTED,
        RunState.EXCEEDED,
    }
)


class BatchOptions(BaseModel):
    parallel: int = Field(default=1, ge=1, le=64)
    retries: int = Field(default=2, ge=0, le=20, description="extra attempts after an infrastructure failure")
    timeout: float | None = Field(default=None, gt=0)
    grace: float | None = Field(default=None, ge=0, le=3600, description="seconds from SIGTERM to SIGKILL")
    watch: bool = False
    idle_seconds: float = Field(
        default=60.0, ge=0, description="--watch: an `idle` event this often while the queue is empty (0: never)"
    )
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=2.0, gt=0)
    retry_backoff: float = Field(default=1.0, ge=0)
    reconnect_seconds: float = Field(
        default=DEFAULT_RECONNECT_SECONDS,
        gt=0,
        description="how long the coordinator may stay away before a worker gives up ([coordinator] reconnect_seconds)",
    )
    coordinator: str = Field(default="the coordinator", description="the coordinator as messages name it (no password)")
    network: Literal["none", "allowlist", "open"] | None = None
    allow: list[str] = Field(default_factory=list)
    presets: list[str] = Field(default_factory=list)
    api_keys: list[str] = Field(default_factory=list)
    sparse: list[str] = Field(default_factory=list, description="folders every run checks out (cone mode)")
    ports: list[str] = Field(default_factory=list, description="NAME[=[SERVICE:]PORT] every run leases (--port)")
    services: list[str] = Field(default_factory=list, description="[run.services] every run starts (--service)")
    labels: dict[str, str] = Field(default_factory=dict, description="labels every run carries (--label)")
    push: bool | None = Field(default=None, description="the host pushes every run's branch ([publish] push)")
    remote: str | None = None
    pr: bool | None = None
    agent: str | None = Field(default=None, description="the agent profile every run uses (--agent)")
    profile: AgentProfile | None = Field(default=None, description="that profile, resolved")


EventKind = Literal[
    "claimed",
    "started",
    "finished",
    "retry",
    "skipped",
    "settled",
    "error",
    "lease-lost",
    "coordinator-lost",
    "coordinator-back",
    "idle",
]


class BatchEvent(BaseModel):
    kind: EventKind
    task_id: str | None = Field(description="the task; None for events of the whole batch (coordinator-*)")
    run_id: str | None = None
    state: str | None = None
    detail: str | None = None
    worker: int
    at: datetime = Field(description="when it happened (UTC)")
    since: datetime | None = Field(
        default=None, description="coordinator-lost/back: since when no lease could be renewed (UTC)"
    )


class TaskOutcome(BaseModel):
    task_id: str
    runs: list[str] = Field(default_factory=list)
    final_state: str | None = None
    exit_code: int | None = None
    skipped: str | None = None


class BatchSummary(BaseModel):
    claimed: int = 0
    runs: int = 0
    retried: int = 0
    by_state: dict[str, int] = Field(default_factory=dict)
    tasks: list[TaskOutcome] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class BatchObserver(Protocol):
    """What a batch tells its metrics (launcher.core.metrics.BatchMetrics) as it goes."""

    def claimed(self) -> None: ...
    def released(self) -> None: ...
    def run_started(self) -> None: ...
    def run_finished(self, run: RunRecord, result: str, claimed_at: float) -> None: ...
    def renewal(self, outcome: str) -> None: ...
    def expired(self, leases: int) -> None: ...
    def resumed(self) -> None: ...
    def takeover(self, side: str) -> None: ...
    def retried(self) -> None: ...
    def error(self) -> None: ...
    def tick(self) -> None: ...


class _NoMetrics:
    def claimed(self) -> None:
        pass

    def released(self) -> None:
        pass

    def run_started(self) -> None:
        pass

    def run_finished(self, run: RunRecord, result: str, claimed_at: float) -> None:
        pass

    def renewal(self, outcome: str) -> None:
        pass

    def expired(self, leases: int) -> None:
        pass

    def resumed(self) -> None:
        pass

    def takeover(self, side: str) -> None:
        pass

    def retried(self) -> None:
        pass

    def error(self) -> None:
        pass

    def tick(self) -> None:
        pass


class InfrastructureFailure(Exception):
    def __init__(self, run: RunRecord | None, message: str) -> None:
        super().__init__(message)
        self.run = run


class Unrecorded(LauncherError):
    """A run ended but the coordinator could not be told (it stayed away past the budget)."""


class LeaseWatch:
    """When each of the batch's leases was last renewed, and whether the pool is paused: a lease
    went unrenewed for longer than the lease (another batch may have taken its task over), until
    the coordinator answers again and no lease is that old any more."""

    def __init__(self, lease_seconds: float) -> None:
        self.lease_seconds = lease_seconds
        self._cond = threading.Condition()
        self._renewed: dict[str, tuple[float, datetime]] = {}  # task -> last renewal (monotonic, UTC)
        self._answered = time.monotonic()
        self._paused: tuple[float, datetime] | None = None  # (detected, monotonic), since (UTC)
        self.last_error: str | None = None

    def held(self, task_id: str) -> None:
        with self._cond:
            self._renewed[task_id] = (time.monotonic(), utcnow())

    def dropped(self, task_id: str) -> None:
        with self._cond:
            self._renewed.pop(task_id, None)

    def renewed(self, task_id: str) -> None:
        with self._cond:
            if task_id in self._renewed:
                self._renewed[task_id] = (time.monotonic(), utcnow())
            self._answered = time.monotonic()
            self._cond.notify_all()

    def answered(self) -> None:
        with self._cond:
            self._answered = time.monotonic()

    def failed(self, exc: BaseException) -> None:
        with self._cond:
            self.last_error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def check(self) -> tuple[Literal["lost", "back"], datetime, list[str]] | None:
        """("lost", since, stale tasks) when the pool pauses now, ("back", since, []) when it
        resumes, None when nothing changed."""
        now = time.monotonic()
        with self._cond:
            stale = {t: at for t, at in self._renewed.items() if now - at[0] > self.lease_seconds}
            if self._paused is None:
                if not stale:
                    return None
                since = min(stale.values())[1]
                self._paused = (now, since)
                return "lost", since, sorted(stale)
            detected, since = self._paused
            if stale or self._answered <= detected:
                return None
            self._paused, self.last_error = None, None
            self._cond.notify_all()
            return "back", since, []

    def paused_for(self) -> float:
        with self._cond:
            return 0.0 if self._paused is None else time.monotonic() - self._paused[0]

    def wait_to_claim(self, stopping: threading.Event, budget: float) -> bool:
        """Until a claim may be made: not paused, and every lease renewed within half a lease
        (see Batch._claim). False when the batch is stopping or the pause has lasted ``budget``."""
        with self._cond:
            while not stopping.is_set():
                now = time.monotonic()
                if self._paused is not None:
                    if now - self._paused[0] >= budget:
                        return False
                elif all(now - at[0] <= self.lease_seconds / 2 for at in self._renewed.values()):
                    return True
                self._cond.wait(0.1)
            return False


class Batch:
    def __init__(
        self,
        make_worker: Callable[[], tuple[Coordinator, RunService]],
        owner: RunOwner,
        options: BatchOptions,
        owner_alive: Callable[[RunOwner | None], bool | None],
        on_event: Callable[[BatchEvent], None],
        environ: dict[str, str] | None = None,
        metrics: BatchObserver | None = None,
    ) -> None:
        self.make_worker = make_worker
        self.owner = owner
        self.options = options
        self.owner_alive = owner_alive
        self.on_event = on_event
        self.environ = dict(os.environ if environ is None else environ)
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._summary = BatchSummary()
        self._leases: dict[str, str] = {}
        self._lost: set[str] = set()  # tasks whose lease another holder took over
        self._watch = LeaseWatch(options.lease_seconds)
        self._renew_now = threading.Event()
        self._lease_id = f"{socket.gethostname()}:{owner.pid}:{owner.start_ticks}"
        self.metrics: BatchObserver = metrics if metrics is not None else _NoMetrics()
        self._claimed_at: dict[str, float] = {}  # task -> unix time of its claim (launch latency)
        self._busy = 0  # workers on a task now
        self._empty_since: float | None = None  # monotonic: since a claim last found nothing to do
        self._last_idle: float | None = None  # monotonic: the last `idle` event

    # -- the loop ----------------------------------------------------------------------

    def run(self) -> BatchSummary:
        heartbeat = threading.Thread(target=self._heartbeat, name="lease-heartbeat", daemon=True)
        heartbeat.start()
        workers = [
            threading.Thread(target=self._worker, args=(i,), name=f"batch-worker-{i}", daemon=True)
            for i in range(self.options.parallel)
        ]
        for worker in workers:
            worker.start()
        tick = min(0.5, self.options.lease_seconds / 4)
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(timeout=tick)
                    self._look_at_leases()
                    self.metrics.tick()
                    self._say_idle()
        except KeyboardInterrupt:
            self.stopping.set()
            raise
        finally:
            self.stopping.set()
            self._renew_now.set()
            heartbeat.join(timeout=5)
        return self._summary

    def _say_idle(self) -> None:
        """--watch with nothing to do: say so every idle_seconds (a silent worker looks dead)."""
        o = self.options
        if not o.watch or o.idle_seconds <= 0:
            return
        now = time.monotonic()
        with self._lock:
            if self._busy or self._empty_since is None:
                return
            since = max(self._empty_since, self._last_idle or self._empty_since)
            if now - since < o.idle_seconds:
                return
            self._last_idle = now
            done = len(self._summary.tasks)
        self._emit("idle", None, -1, detail=f"queue empty, {done} done, waiting")

    def _look_at_leases(self) -> None:
        """Pause claiming when a lease has gone unrenewed for longer than the lease; resume once
        the coordinator answers again and every lease is renewed. Said once each way."""
        change = self._watch.check()
        if change is None:
            return
        kind, since, tasks = change
        where = self.options.coordinator
        if kind == "lost":
            error = f"; last error: {self._watch.last_error}" if self._watch.last_error else ""
            detail = (
                f"paused: cannot renew leases with {where} since {since:%H:%M:%S} UTC ({', '.join(tasks)}){error}; "
                "no new task is claimed until it answers, runs in progress go on"
            )
            self.metrics.expired(len(tasks))
            self._emit("coordinator-lost", None, -1, since=since, detail=detail)
            return
        self.metrics.resumed()
        away = (utcnow() - since).total_seconds()
        self._emit(
            "coordinator-back",
            None,
            -1,
            since=since,
            detail=f"{where} answers again, leases renewed ({away:.1f}s after the last renewal); claiming resumes",
        )

    def _coordinator_call(self, call: Callable[[], _T], what: str) -> _T:
        """``call`` again while the coordinator fails, with jittered exponential backoff, until it
        has failed for ``reconnect_seconds`` (a store call that rode out that long itself fails at
        once) and at least COORDINATOR_RETRIES times; then its last error, with what to do."""
        o = self.options

        def giving_up(state: RetryCallState) -> bool:
            if self.stopping.is_set():
                return True
            if state.seconds_since_start is not None and state.seconds_since_start >= o.reconnect_seconds:
                return True  # e.g. one store call that rode out the whole budget itself
            timed_out = stop_before_delay(o.reconnect_seconds)(state)
            return bool(timed_out and stop_after_attempt(COORDINATOR_RETRIES + 1)(state))

        def pause(seconds: float) -> None:
            self.stopping.wait(seconds)

        retrying = Retrying(
            retry=retry_if_exception_type(COORDINATOR_ERRORS),
            stop=giving_up,
            wait=wait_exponential_jitter(
                multiplier=min(o.poll_seconds, 0.5),
                max=max(min(o.poll_seconds, 5.0), 1.0),
                jitter=min(o.poll_seconds, 1.0),
            ),
            sleep=pause,
            reraise=True,
        )
        started = time.monotonic()
        try:
            for attempt in retrying:
                with attempt:
                    return call()
        except COORDINATOR_ERRORS as exc:
            waited = time.monotonic() - started
            raise StateStoreError(
                f"{what}: {o.coordinator} failed for {waited:.0f}s: {exc.message}",
                hint=f"check that the coordinator is running and reachable from this box, then run the batch "
                f"again (tasks it held are claimed again once their leases expire); [coordinator] "
                f"reconnect_seconds (${RECONNECT_ENV}, now {o.reconnect_seconds:g}s) is how long a worker waits",
            ) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _start_worker(self, index: int, what: str = "") -> tuple[Coordinator, RunService] | None:
        """A worker's own connection and run service; a coordinator that is away for a moment
        (a restart, a dropped connection while it connects) is waited for as in the claim loop."""
        name = what or f"worker {index}"
        try:
            return self._coordinator_call(self.make_worker, f"{name} could not start")
        except LauncherError as exc:
            self._error(str(exc))
            return None

    def _worker(self, index: int) -> None:
        started = self._start_worker(index)
        if started is None:
            return
        store, service = started
        lease_owner = f"{self._lease_id}:{index}"
        try:
            while not self.stopping.is_set():
                try:
                    task, more_coming = self._coordinator_call(
                        lambda: self._claim(store, lease_owner, index), f"worker {index} gave up claiming tasks"
                    )
                except LauncherError as exc:
                    if not self.stopping.is_set():
                        self._error(str(exc))
                    return
                if task is None:
                    with self._lock:
                        if self._empty_since is None:
                            self._empty_since = time.monotonic()
                    if not more_coming:
                        return
                    self.stopping.wait(self.options.poll_seconds)
                    continue
                with self._lock:
                    self._leases[task.id] = lease_owner
                    self._summary.claimed += 1
                    self._claimed_at[task.id] = time.time()
                    self._busy += 1
                    self._empty_since = self._last_idle = None
                self.metrics.claimed()
                self._watch.held(task.id)
                self._emit("claimed", task.id, index, detail=f"claim #{task.claims}")
                try:
                    self._process(store, service, task, index, lease_owner)
                except Unrecorded as exc:
                    # Taken off nothing: the claim expires by itself, and the run is gc's to record.
                    self._error(f"{task.id}: {exc}")
                    self._emit("error", task.id, index, detail=exc.message)
                except COORDINATOR_ERRORS as exc:
                    # The coordinator stayed away before the task's run began: left on the queue
                    # (giving it back would fail alike), claimed again once its lease expires.
                    self._error(f"{task.id}: {exc} (left on the queue: claimed again once its lease expires)")
                    self._emit("error", task.id, index, detail=exc.message)
                except Exception as exc:  # the run was settled; one task's defect must not stop the worker
                    what = (
                        str(exc) if isinstance(exc, LauncherError) else f"internal error: {type(exc).__name__}: {exc}"
                    )
                    self._error(f"{task.id}: {what} (taken off the queue: fix it, then `launcher queue {task.id}`)")
                    self._emit("error", task.id, index, detail=what)
                    # Off the queue: left on it, the same refusal would be claimed again at once, forever.
                    self._release(store, task, lease_owner, index)
                finally:
                    with self._lock:
                        self._leases.pop(task.id, None)
                        self._lost.discard(task.id)
                        self._claimed_at.pop(task.id, None)
                        self._busy -= 1
                        self._empty_since = None  # idle counts from the next claim that finds nothing
                    self._watch.dropped(task.id)
                    self.metrics.released()
        finally:
            store.close()

    def _gave_up_paused(self, index: int) -> str:
        o = self.options
        return (
            f"worker {index} gave up: paused for {self._watch.paused_for():.0f}s, {o.coordinator} renewing none of "
            f"this batch's leases ({self._watch.last_error or 'no answer'}); check that it is running and reachable "
            f"from this box, then run the batch again (runs in progress finish; [coordinator] reconnect_seconds, "
            f"${RECONNECT_ENV}, now {o.reconnect_seconds:g}s, is how long a worker waits)"
        )

    def _claim(self, store: Coordinator, lease_owner: str, index: int) -> tuple[TaskRecord | None, bool]:
        """The next task, and whether more may come.

        A claim must never land after one of this batch's own leases has run out: it would take
        over a task a worker here is running. So a claim is made only while every lease was
        renewed within half a lease, and it gives up on a server that is away after a quarter
        of one (instead of riding the outage out and landing when the leases are gone); the
        loop then waits here again, for the heartbeat to renew them."""
        o = self.options
        if not self._watch.wait_to_claim(self.stopping, o.reconnect_seconds):
            raise LauncherError(self._gave_up_paused(index))
        short: Callable[[float], AbstractContextManager[None]] | None = getattr(store, "reconnecting_for", None)
        with short(o.lease_seconds / 4) if short is not None else nullcontext():
            task = store.claim_next(lease_owner, o.lease_seconds)
        more_coming = task is None and (self.options.watch or self._others_hold_queued(store))
        self._watch.answered()
        return task, more_coming

    def _release(self, store: Coordinator, task: TaskRecord, lease_owner: str, index: int) -> None:
        """Give the claim back and take the task off the queue, unless another holder has it now.

        (release_claim matches on the owner, so giving back a claim taken over would change
        nothing; it is not even asked.) A coordinator still away after its budget is no error:
        the claim expires by itself, and no batch reruns a task whose run finished."""
        task_id = task.id
        with self._lock:
            lost = task_id in self._lost
        if lost:
            return
        try:
            # Fenced: a claim of this owner's name taken over and re-taken since is not ours.
            store.release_claim(task_id, lease_owner, done=True, fence=task.claims)
        except LauncherError as exc:
            self._emit(
                "error",
                task_id,
                index,
                detail=f"could not give the claim back ({exc.message}); it expires in {self.options.lease_seconds:g}s",
            )

    def _others_hold_queued(self, store: Coordinator) -> bool:
        """Queued tasks leased by someone else: wait, they either finish or their lease expires."""
        return any(t.queued for t in store.list_tasks())

    def _process(self, store: Coordinator, service: RunService, task: TaskRecord, index: int, lease_owner: str) -> None:
        self._settle_leftovers(store, service, task, index)
        outcome = TaskOutcome(task_id=task.id)
        finished = [
            r
            for r in store.list_runs(task_id=task.id)
            if r.state in FINISHED and (task.queued_at is None or r.created_at >= task.queued_at)
        ]
        if finished:
            last = finished[-1]
            outcome.skipped = f"run {last.id} already finished ({last.state.value})"
            outcome.final_state, outcome.exit_code = last.state.value, last.exit_code
            self._release(store, task, lease_owner, index)
            self._emit("skipped", task.id, index, run_id=last.id, state=last.state.value, detail=outcome.skipped)
            self._record(outcome)
            return
        try:
            record = self._run_with_retries(service, task, index, outcome)
        except Unrecorded:
            self._record(outcome)
            raise
        outcome.final_state, outcome.exit_code = record.state.value, record.exit_code
        if outcome.final_state == RunState.EXITED and publish_failed(record):
            # The agent's work stands (on its local branch) but it did not leave the box: a failure.
            outcome.final_state = "publish-failed"
        self._release(store, task, lease_owner, index)
        self._record(outcome)

    def _run_with_retries(self, service: RunService, task: TaskRecord, index: int, outcome: TaskOutcome) -> RunRecord:
        retrying = Retrying(
            retry=retry_if_exception_type(InfrastructureFailure),
            stop=stop_after_attempt(self.options.retries + 1),
            wait=wait_exponential(multiplier=self.options.retry_backoff, max=30),
            before_sleep=lambda state: self._retry_event(task.id, index, state.outcome),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(service, task, index, outcome)
        except InfrastructureFailure as exc:
            if exc.run is not None:
                return exc.run
            raise LauncherError(str(exc)) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _attempt(self, service: RunService, task: TaskRecord, index: int, outcome: TaskOutcome) -> RunRecord:
        o = self.options
        request = RunRequest(
            task=task.id,
            timeout=o.timeout,
            grace=o.grace,
            network=o.network,
            allow=o.allow,
            presets=o.presets,
            api_keys=o.api_keys,
            sparse=o.sparse,
            ports=o.ports,
            services=o.services,
            labels=o.labels,
            push=o.push,
            remote=o.remote,
            pr=o.pr,
            agent=o.agent,
            profile=o.profile,
        )
        try:
            plan = service.plan(request, self.environ)
        except LauncherError as exc:
            if is_infrastructure_error(exc):
                raise InfrastructureFailure(None, str(exc)) from exc
            raise
        run = service.create(plan, self.owner)
        outcome.runs.append(run.id)
        with self._lock:
            self._summary.runs += 1
            claimed_at = self._claimed_at.get(task.id, time.time())
        self.metrics.run_started()
        self._emit("started", task.id, index, run_id=run.id, detail=run.branch)
        try:
            run = service.execute(plan, run, echo=None)
        except StateStoreError as exc:
            # Settled as far as the host goes (container gone, work harvested), but the coordinator
            # stayed away past its budget: the record says the run is live. Say what is known.
            outcome.final_state = "unrecorded"
            raise Unrecorded(
                f"run {run.id} could not be recorded as ended: {self.options.coordinator} stayed away "
                f"({exc.message}); what its harvest took is on branch {run.branch} in the repository, its output "
                f"in its log (`launcher logs {run.id}`)",
                hint=f"once the coordinator answers, `launcher gc` settles run {run.id}; its claim on {task.id} "
                f"expires by itself, and `launcher queue {task.id}` runs the task again if you want another attempt",
            ) from exc
        result = "publish-failed" if run.state is RunState.EXITED and publish_failed(run) else run.state.value
        self.metrics.run_finished(run, result, claimed_at)
        self._emit("finished", task.id, index, run_id=run.id, state=run.state.value, detail=_exit_text(run))
        if run.state is RunState.SUPERSEDED:
            # A newer claim has the task: another attempt here would only be refused (claimed).
            return run
        if run.details.infrastructure_failure:
            raise InfrastructureFailure(run, "; ".join(run.details.errors or ["infrastructure failure"]))
        return run

    def _retry_event(self, task_id: str, index: int, outcome: object) -> None:
        with self._lock:
            self._summary.retried += 1
        self.metrics.retried()
        self._emit("retry", task_id, index, detail=str(getattr(outcome, "exception", lambda: "")()))

    def _settle_leftovers(self, store: Coordinator, service: RunService, task: TaskRecord, index: int) -> None:
        """Live runs of a task we now hold the lease of belong to a batch that died."""
        for run in store.list_runs(task_id=task.id, states=LIVE_RUN_STATES):
            if self.owner_alive(run.owner) is True and run.owner != self.owner:
                continue
            settled = service.settle_record(run, "lost", "the batch that ran it died; its lease expired")
            self.metrics.takeover("taken")
            self._emit("settled", task.id, index, run_id=run.id, state=settled.state.value)

    # -- bookkeeping ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        started = self._start_worker(-1, "lease heartbeat")
        if started is None:
            # Without renewals every claim would expire under its run: claim nothing more.
            self.stopping.set()
            return
        store, _ = started
        interval = max(self.options.lease_seconds / 3, 0.05)
        try:
            while not self.stopping.is_set():
                self._renew_now.wait(interval)
                self._renew_now.clear()
                if self.stopping.is_set():
                    return
                was_paused = self._watch.paused_for() > 0
                with self._lock:
                    leases = {t: o for t, o in self._leases.items() if t not in self._lost}
                for task_id, lease_owner in leases.items():
                    try:
                        kept = store.renew_lease(task_id, lease_owner, self.options.lease_seconds)
                    except LauncherError as exc:
                        # Away even after the store's own retries: the rest would fail alike. The
                        # main loop pauses claiming once a lease has gone unrenewed for too long.
                        self._watch.failed(exc)
                        self.metrics.renewal("error")
                        break
                    if kept:
                        self._watch.renewed(task_id)
                        self.metrics.renewal("renewed")
                        continue
                    self.metrics.renewal("lost")
                    self.metrics.takeover("lost")
                    self._watch.answered()
                    with self._lock:
                        self._lost.add(task_id)
                    self._watch.dropped(task_id)
                    self._emit("lease-lost", task_id, -1, detail="another batch took the task over")
                if was_paused:
                    self._look_at_leases()  # say "back" now, not at the next tick
        finally:
            store.close()

    def _record(self, outcome: TaskOutcome) -> None:
        with self._lock:
            self._summary.tasks.append(outcome)
            counts = Counter(t.final_state for t in self._summary.tasks if t.final_state)
            self._summary.by_state = dict(sorted(counts.items()))

    def _error(self, message: str) -> None:
        with self._lock:
            self._summary.errors.append(message)
        self.metrics.error()

    def _emit(
        self,
        kind: EventKind,
        task_id: str | None,
        worker: int,
        *,
        run_id: str | None = None,
        state: str | None = None,
        detail: str | None = None,
        since: datetime | None = None,
    ) -> None:
        self.on_event(
            BatchEvent(
                kind=kind,
                task_id=task_id,
                run_id=run_id,
                state=state,
                detail=detail,
                worker=worker,
                at=utcnow(),
                since=since,
            )
        )


def _exit_text(run: RunRecord) -> str:
    return f"exit {run.exit_code}" if run.exit_code is not None else (run.details.errors or [""])[0][:200]

"""Unattended batches: claim queued tasks, run each as an isolated run, never twice.

Each worker thread has its own coordinator connection and run service. A claim is a lease
renewed by a heartbeat while the run lives; a batch that dies stops renewing, its leases
expire, and another batch (or a restart) reclaims the tasks, settles the runs left behind
as lost, and does not rerun a task whose run already finished.

Only infrastructure failures are retried (Docker API errors, git lock contention, a
coordinator that stayed locked), with backoff; an agent's non-zero exit is a result.
"""

from __future__ import annotations

import os
import socket
import threading
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from launcher.core.ports import Coordinator
from launcher.core.run import RunRequest, RunService, is_infrastructure_error
from launcher.core.run.publish import publish_failed
from launcher.core.transitions import LIVE_RUN_STATES, RunState
from launcher.errors import LauncherError
from launcher.models import RunOwner, RunRecord, TaskRecord, utcnow
from launcher.settings import AgentProfile

COORDINATOR_RETRIES = 5
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
    lease_seconds: float = Field(default=60.0, gt=0)
    poll_seconds: float = Field(default=2.0, gt=0)
    retry_backoff: float = Field(default=1.0, ge=0)
    network: Literal["none", "allowlist", "open"] | None = None
    allow: list[str] = Field(default_factory=list)
    presets: list[str] = Field(default_factory=list)
    api_keys: list[str] = Field(default_factory=list)
    sparse: list[str] = Field(default_factory=list, description="folders every run checks out (cone mode)")
    push: bool | None = Field(default=None, description="the host pushes every run's branch ([publish] push)")
    remote: str | None = None
    pr: bool | None = None
    agent: str | None = Field(default=None, description="the agent profile every run uses (--agent)")
    profile: AgentProfile | None = Field(default=None, description="that profile, resolved")


EventKind = Literal["claimed", "started", "finished", "retry", "skipped", "settled", "error", "lease-lost"]


class BatchEvent(BaseModel):
    kind: EventKind
    task_id: str
    run_id: str | None = None
    state: str | None = None
    detail: str | None = None
    worker: int
    at: datetime = Field(description="when it happened (UTC)")


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


class InfrastructureFailure(Exception):
    def __init__(self, run: RunRecord | None, message: str) -> None:
        super().__init__(message)
        self.run = run


class Batch:
    def __init__(
        self,
        make_worker: Callable[[], tuple[Coordinator, RunService]],
        owner: RunOwner,
        options: BatchOptions,
        owner_alive: Callable[[RunOwner | None], bool | None],
        on_event: Callable[[BatchEvent], None],
        environ: dict[str, str] | None = None,
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
        self._lease_id = f"{socket.gethostname()}:{owner.pid}:{owner.start_ticks}"

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
        try:
            for worker in workers:
                while worker.is_alive():
                    worker.join(timeout=0.5)
        except KeyboardInterrupt:
            self.stopping.set()
            raise
        finally:
            self.stopping.set()
            heartbeat.join(timeout=5)
        return self._summary

    def _start_worker(self, index: int, what: str = "") -> tuple[Coordinator, RunService] | None:
        """A worker's own connection and run service; a coordinator that is away for a moment
        (a restart, a dropped connection while it connects) is waited for as in the claim loop."""
        for failures in range(1, COORDINATOR_RETRIES + 2):
            try:
                return self.make_worker()
            except LauncherError as exc:
                if failures > COORDINATOR_RETRIES or self.stopping.is_set():
                    self._error(f"{what or f'worker {index}'} could not start: {exc}")
                    return None
                self.stopping.wait(min(self.options.poll_seconds * failures, 30))
        return None

    def _worker(self, index: int) -> None:
        started = self._start_worker(index)
        if started is None:
            return
        store, service = started
        lease_owner = f"{self._lease_id}:{index}"
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    task = store.claim_next(lease_owner, self.options.lease_seconds)
                    more_coming = task is None and (self.options.watch or self._others_hold_queued(store))
                    failures = 0
                except LauncherError as exc:
                    # The coordinator went away (restart, failover, a dropped connection):
                    # back off and retry a bounded number of times, then say so and stop.
                    failures += 1
                    if failures > COORDINATOR_RETRIES:
                        self._error(f"worker {index} gave up after {failures} coordinator errors: {exc}")
                        return
                    self.stopping.wait(min(self.options.poll_seconds * failures, 30))
                    continue
                if task is None:
                    if not more_coming:
                        return
                    self.stopping.wait(self.options.poll_seconds)
                    continue
                with self._lock:
                    self._leases[task.id] = lease_owner
                    self._summary.claimed += 1
                self._emit("claimed", task.id, index, detail=f"claim #{task.claims}")
                try:
                    self._process(store, service, task, index, lease_owner)
                except Exception as exc:  # the run was settled; one task's defect must not stop the worker
                    what = (
                        str(exc) if isinstance(exc, LauncherError) else f"internal error: {type(exc).__name__}: {exc}"
                    )
                    self._error(f"{task.id}: {what} (taken off the queue: fix it, then `launcher queue {task.id}`)")
                    self._emit("error", task.id, index, detail=what)
                    # Off the queue: left on it, the same refusal would be claimed again at once, forever.
                    store.release_claim(task.id, lease_owner, done=True)
                finally:
                    with self._lock:
                        self._leases.pop(task.id, None)
        finally:
            store.close()

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
            store.release_claim(task.id, lease_owner, done=True)
            self._emit("skipped", task.id, index, run_id=last.id, state=last.state.value, detail=outcome.skipped)
            self._record(outcome)
            return
        record = self._run_with_retries(service, task, index, outcome)
        outcome.final_state, outcome.exit_code = record.state.value, record.exit_code
        if outcome.final_state == RunState.EXITED and publish_failed(record):
            # The agent's work stands (on its local branch) but it did not leave the box: a failure.
            outcome.final_state = "publish-failed"
        store.release_claim(task.id, lease_owner, done=True)
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
        self._emit("started", task.id, index, run_id=run.id, detail=run.branch)
        run = service.execute(plan, run, echo=None)
        self._emit("finished", task.id, index, run_id=run.id, state=run.state.value, detail=_exit_text(run))
        if run.details.infrastructure_failure:
            raise InfrastructureFailure(run, "; ".join(run.details.errors or ["infrastructure failure"]))
        return run

    def _retry_event(self, task_id: str, index: int, outcome: object) -> None:
        with self._lock:
            self._summary.retried += 1
        self._emit("retry", task_id, index, detail=str(getattr(outcome, "exception", lambda: "")()))

    def _settle_leftovers(self, store: Coordinator, service: RunService, task: TaskRecord, index: int) -> None:
        """Live runs of a task we now hold the lease of belong to a batch that died."""
        for run in store.list_runs(task_id=task.id, states=LIVE_RUN_STATES):
            if self.owner_alive(run.owner) is True and run.owner != self.owner:
                continue
            settled = service.settle_record(run, "lost", "the batch that ran it died; its lease expired")
            self._emit("settled", task.id, index, run_id=run.id, state=settled.state.value)

    # -- bookkeeping ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        started = self._start_worker(-1, "lease heartbeat")
        if started is None:
            return
        store, _ = started
        interval = max(self.options.lease_seconds / 3, 0.05)
        try:
            while not self.stopping.wait(interval):
                with self._lock:
                    leases = dict(self._leases)
                for task_id, lease_owner in leases.items():
                    try:
                        if not store.renew_lease(task_id, lease_owner, self.options.lease_seconds):
                            self._emit("lease-lost", task_id, -1, detail="another batch took the task over")
                    except LauncherError as exc:
                        self._error(f"renewing the lease of {task_id}: {exc}")
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

    def _emit(
        self,
        kind: EventKind,
        task_id: str,
        worker: int,
        *,
        run_id: str | None = None,
        state: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.on_event(
            BatchEvent(
                kind=kind, task_id=task_id, run_id=run_id, state=state, detail=detail, worker=worker, at=utcnow()
            )
        )


def _exit_text(run: RunRecord) -> str:
    return f"exit {run.exit_code}" if run.exit_code is not None else (run.details.errors or [""])[0][:200]

"""A run from the outside, after it started: stop it, remove what it left, read its logs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pydantic import BaseModel

from launcher.core import labels
from launcher.core.run.deps import RunDeps
from launcher.core.run.settle import remove_worktree, settle_record
from launcher.core.transitions import LIVE_RUN_STATES, TERMINAL_RUN_STATES
from launcher.errors import InvalidInputError, NotFoundError, TransitionConflictError
from launcher.models import RunOwner, RunRecord

OwnerAlive = Callable[[RunOwner | None], bool | None]
STOP_WAIT_S = 120.0
# A log file has no change notification that works everywhere (bind mounts, NFS): poll it.
LOG_POLL_S = 0.2
STATE_POLL_S = 0.1


class RemoveReport(BaseModel):
    run: str
    removed: list[str]
    branch_kept: str


def stop(
    deps: RunDeps,
    run_id: str,
    owner_alive: OwnerAlive,
    *,
    grace: float | None = None,
    wait: float = STOP_WAIT_S,
) -> RunRecord:
    """Stop a live run: SIGTERM to the agent, ``grace`` seconds (default: the run's own, else
    [run] grace), then SIGKILL. Its owner records `cancelled` (or this process, if the owner is
    gone). A run that has already ended is returned as it is: what was asked for is so."""
    record = deps.store.get_run(run_id)
    if record.state in TERMINAL_RUN_STATES:
        return record
    try:
        record = deps.store.update_run(run_id, expected=LIVE_RUN_STATES, cancel_requested=True)
    except TransitionConflictError:
        return deps.store.get_run(run_id)  # it ended meanwhile
    if grace is None:
        grace = deps.defaults.grace if record.details.grace is None else record.details.grace
    if record.container_id:
        deps.sandbox.stop(record.container_id, grace)
    if owner_alive(record.owner) is False:
        return settle_record(deps, record, "cancelled", None)
    return await_terminal(deps, run_id, wait)


def await_terminal(deps: RunDeps, run_id: str, timeout: float) -> RunRecord:
    deadline = time.monotonic() + timeout
    record = deps.store.get_run(run_id)
    while record.state not in TERMINAL_RUN_STATES and time.monotonic() < deadline:
        time.sleep(STATE_POLL_S)  # the owning process records the end; nothing to block on across processes
        record = deps.store.get_run(run_id)
    return record


def remove(deps: RunDeps, run_id: str, owner_alive: OwnerAlive, *, force: bool) -> RemoveReport:
    """Remove a run's container and folders (stopping it first with ``force``); its branch stays."""
    record = deps.store.get_run(run_id)
    if record.state in LIVE_RUN_STATES:
        if not force:
            raise InvalidInputError(f"run {run_id} is {record.state.value}", hint="stop it first, or pass --force")
        record = stop(deps, run_id, owner_alive)
    paths = deps.paths(record)
    removed = []
    for container in deps.sandbox.list({labels.RUN_ID: record.id, labels.ROOT: str(deps.root)}):
        deps.sandbox.remove(container.id)
        removed.append(f"container {container.name}")
    if paths.worktree.exists():
        removed.append(f"worktree {paths.worktree}")
    remove_worktree(deps, deps.recorded_repo(record), paths)
    deps.workspace.remove_tree(paths.sandbox)
    deps.store.update_run(record.id, details={"removed": True, "keep_worktree": False})
    return RemoveReport(run=record.id, removed=removed, branch_kept=record.branch)


def log_path(deps: RunDeps, run: RunRecord, *, egress: bool) -> Path:
    """The run's output log, or its network decision log (the proxy's while it runs, then its own)."""
    paths = deps.paths(run)
    if not egress:
        return paths.log
    live = deps.egress.files.live_log(run.id) if deps.egress is not None else None
    if paths.egress_log.exists() or live is None or not live.exists():
        return paths.egress_log
    return live


def read_log(deps: RunDeps, run_id: str, *, egress: bool, follow: bool) -> Iterator[bytes]:
    """The log's bytes as they are written; with ``follow``, until the run has ended."""
    record = deps.store.get_run(run_id)
    offset = 0
    while True:
        try:
            with open(log_path(deps, record, egress=egress), "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
            if not follow and record.state in TERMINAL_RUN_STATES:
                what = "network decision log (it made no requests, or ran with --network none)" if egress else "log"
                raise NotFoundError(f"run {run_id} has no {what}") from None
        if data:
            offset += len(data)
            yield data
        if not follow or record.state in TERMINAL_RUN_STATES:
            return
        time.sleep(LOG_POLL_S)
        record = deps.store.get_run(run_id)

"""A run from the outside, after it started: stop it, remove what it left, read its logs."""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from launcher.core import labels, uids
from launcher.core.run.deps import RunDeps
from launcher.core.run.settle import remove_worktree, settle_record
from launcher.core.runlayout import CONTAINER_WORKTREE
from launcher.core.transitions import LIVE_RUN_STATES, TERMINAL_RUN_STATES, RunState
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


SHELL = ["/bin/sh", "-c", "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi"]


def exec_in(deps: RunDeps, run_id: str, command: list[str], out: Callable[[int, bytes], None]) -> int:
    """Run ``command`` inside a live run's container, as the run's uid, in its worktree: what the
    agent could run itself (same profile, same network, same environment). Its exit status."""
    container_id, user = _live_container(deps, run_id)
    return deps.sandbox.exec_in(container_id, command, user=user, workdir=CONTAINER_WORKTREE, out=out)


def shell(deps: RunDeps, run_id: str) -> int:
    """An interactive shell on this terminal inside a live run, as ``exec_in`` runs a command."""
    container_id, user = _live_container(deps, run_id)
    return deps.sandbox.interactive(container_id, SHELL, user=user, workdir=CONTAINER_WORKTREE)


def _live_container(deps: RunDeps, run_id: str) -> tuple[str, str]:
    record = deps.store.get_run(run_id)
    if record.state is not RunState.RUNNING or not record.container_id or record.uid is None:
        refused = TransitionConflictError(
            f"run {record.id} is {record.state.value}: only a running run's container takes commands",
            actual=record.state.value,
            expected=RunState.RUNNING.value,
        )
        refused.hint = "`launcher ps` lists the running runs; `launcher checkout RUN` looks at a finished one's result"
        raise refused
    return record.container_id, f"{record.uid}:{uids.ids_of(record.uid)[1]}"


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
    # A teardown in progress ends first: two removers never work on one run.
    deps.teardown_locks.hold(record.id).release()
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


def read_log(deps: RunDeps, run_id: str, *, egress: bool, follow: bool, tail: int | None = None) -> Iterator[bytes]:
    """The log's bytes as they are written; with ``follow``, until the run has ended. With
    ``tail``, only the last ``tail`` lines of what the log held at the first look (all of what
    comes after)."""
    for _run, data in read_logs(deps, [run_id], egress=egress, follow=follow, tail=tail):
        yield data


def read_logs(
    deps: RunDeps, run_ids: list[str], *, egress: bool, follow: bool, tail: int | None = None
) -> Iterator[tuple[str, bytes]]:
    """Several runs' logs at once, as (run ID, bytes) in the order they were written, each run's
    until it has ended (with ``follow``). One thread polls them all: the coordinator's
    connection is not shared across threads."""
    readers = [_LogReader(deps, run_id, egress=egress, tail=tail, follow=follow) for run_id in run_ids]
    while readers:
        for reader in list(readers):
            data = reader.read()
            if data:
                yield reader.run_id, data
            if not follow or reader.ended:
                readers.remove(reader)
        if readers:
            time.sleep(LOG_POLL_S)
            for reader in readers:
                reader.refresh()


class _LogReader:
    def __init__(self, deps: RunDeps, run_id: str, *, egress: bool, tail: int | None, follow: bool) -> None:
        self.deps, self.run_id, self.egress, self.tail, self.follow = deps, run_id, egress, tail, follow
        self.record = deps.store.get_run(run_id)
        self.offset = 0

    @property
    def ended(self) -> bool:
        return self.record.state in TERMINAL_RUN_STATES

    def refresh(self) -> None:
        self.record = self.deps.store.get_run(self.run_id)

    def read(self) -> bytes:
        """What was written since the last read; NotFoundError for an ended run without one (unless
        following: a follower is told only what there is)."""
        tail, self.tail = self.tail, None  # after the first look, the rest comes whole
        try:
            with open(log_path(self.deps, self.record, egress=self.egress), "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
                self.offset = handle.tell()
        except FileNotFoundError:
            if self.ended and not self.follow:
                what = (
                    "network decision log (it made no requests, or ran with --network none)" if self.egress else "log"
                )
                raise NotFoundError(f"run {self.run_id} has no {what}") from None
            return b""
        return data if tail is None else last_lines(data, tail)


def last_lines(data: bytes, count: int) -> bytes:
    """The last ``count`` lines of ``data`` (a last line without its newline counts as one)."""
    if count <= 0:
        return b""
    end = len(data) - 1 if data.endswith(b"\n") else len(data)
    start = end
    for _ in range(count):
        start = data.rfind(b"\n", 0, start)
        if start < 0:
            return data
    return data[start + 1 :]


@dataclass(frozen=True)
class TimedLine:
    """A line of a run's log and when it was written (None: the log has no time index there)."""

    run_id: str
    line: bytes
    at: float | None


class _LogTimes:
    """A run's log time index (``<offset> <unix time>`` lines, host-written), read as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.read_to = 0
        self.offsets: list[int] = []
        self.times: list[float] = []

    def at(self, offset: int) -> float | None:
        if not self.offsets or offset > self.offsets[-1]:
            self._more()
        index = bisect.bisect_right(self.offsets, offset) - 1
        return self.times[index] if index >= 0 else None

    def _more(self) -> None:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.read_to)
                data = handle.read()
        except FileNotFoundError:
            return
        whole = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
        self.read_to += len(whole)
        for entry in whole.splitlines():
            offset, _, stamp = entry.partition(b" ")
            try:
                self.offsets.append(int(offset))
                self.times.append(float(stamp))
            except ValueError:
                continue


class _TimedRun:
    """One run's lines being cut out of its log chunks, each with its time."""

    def __init__(self, run_id: str, times: _LogTimes) -> None:
        self.run_id, self.times = run_id, times
        self.start = 0  # the log offset ``pending`` starts at
        self.pending = b""
        self.first = True

    def lines(self, data: bytes, *, final: bool) -> list[TimedLine]:
        data = self.pending + data
        out: list[TimedLine] = []
        while (cut := data.find(b"\n")) >= 0:
            line, data = data[: cut + 1], data[cut + 1 :]
            out.append(TimedLine(self.run_id, line, self.times.at(self.start)))
            self.start += len(line)
        if final and data:
            out.append(TimedLine(self.run_id, data, self.times.at(self.start)))
            self.start, data = self.start + len(data), b""
        self.pending = data
        return out


def read_timed_lines(
    deps: RunDeps,
    run_ids: list[str],
    *,
    follow: bool,
    tail: int | None = None,
    since: float | None = None,
) -> Iterator[TimedLine]:
    """Runs' log lines with the time each was written, as ``read_logs`` reads them; with ``since``
    (unix time) only lines written then or later (a line of unknown time is not), with ``tail``
    the last lines of those."""
    runs = {rid: _TimedRun(rid, _LogTimes(deps.paths(deps.store.get_run(rid)).log_times)) for rid in run_ids}

    def kept(found: list[TimedLine]) -> list[TimedLine]:
        return [t for t in found if since is None or (t.at is not None and t.at >= since)]

    for run_id, chunk in read_logs(deps, run_ids, egress=False, follow=follow):
        run = runs[run_id]
        found = kept(run.lines(chunk, final=False))
        if run.first:
            run.first = False
            if tail is not None:
                found = found[-tail:] if tail > 0 else []
        yield from found
    for run in runs.values():
        yield from kept(run.lines(b"", final=True))

"""The run service: what callers (the CLI, batch, gc, the warm pool) ask of runs.

A façade over one module per step; it holds no rules of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from launcher.core.run import lifecycle
from launcher.core.run.claim import claim_run
from launcher.core.run.deps import RunDeps
from launcher.core.run.execute import execute
from launcher.core.run.lifecycle import OwnerAlive, RemoveReport
from launcher.core.run.output import Echo
from launcher.core.run.plan import plan_run
from launcher.core.run.pool_take import discard_slot
from launcher.core.run.request import Ending, RunPlan, RunRequest
from launcher.core.run.settle import settle_record
from launcher.core.runlayout import RunPaths
from launcher.models import PoolSlot, RunOwner, RunRecord


class RunService:
    def __init__(self, deps: RunDeps) -> None:
        self.deps = deps

    def plan(self, request: RunRequest, host_environ: Mapping[str, str]) -> RunPlan:
        """Check everything that can be refused; nothing is created."""
        return plan_run(self.deps, request, host_environ)

    def create(self, plan: RunPlan, owner: RunOwner) -> RunRecord:
        """Claim the run: its ID, attempt, branch and uid, with the plan recorded."""
        return claim_run(self.deps, plan, owner)

    def execute(self, plan: RunPlan, run: RunRecord, echo: Echo | None = None) -> RunRecord:
        """Prepare, start, supervise and settle a claimed run; its final record."""
        return execute(self.deps, plan, run, echo)

    def settle_record(self, run: RunRecord, ending: Ending, reason: str | None) -> RunRecord:
        """Settle a run whose launcher is gone, from its record alone."""
        return settle_record(self.deps, run, ending, reason)

    def stop(self, run_id: str, owner_alive: OwnerAlive, *, grace: float | None = None) -> RunRecord:
        return lifecycle.stop(self.deps, run_id, owner_alive, grace=grace)

    def remove(self, run_id: str, owner_alive: OwnerAlive, *, force: bool) -> RemoveReport:
        return lifecycle.remove(self.deps, run_id, owner_alive, force=force)

    def exec_in(self, run_id: str, command: list[str], out: Callable[[int, bytes], None]) -> int:
        return lifecycle.exec_in(self.deps, run_id, command, out)

    def shell(self, run_id: str) -> int:
        return lifecycle.shell(self.deps, run_id)

    def read_log(self, run_id: str, *, egress: bool, follow: bool) -> Iterator[bytes]:
        return lifecycle.read_log(self.deps, run_id, egress=egress, follow=follow)

    def read_logs(
        self, run_ids: list[str], *, egress: bool, follow: bool, tail: int | None = None
    ) -> Iterator[tuple[str, bytes]]:
        return lifecycle.read_logs(self.deps, run_ids, egress=egress, follow=follow, tail=tail)

    def read_timed_lines(
        self, run_ids: list[str], *, follow: bool, tail: int | None = None, since: float | None = None
    ) -> Iterator[lifecycle.TimedLine]:
        return lifecycle.read_timed_lines(self.deps, run_ids, follow=follow, tail=tail, since=since)

    def log_path(self, run: RunRecord, *, egress: bool = False) -> Path:
        return lifecycle.log_path(self.deps, run, egress=egress)

    def paths(self, run: RunRecord) -> RunPaths:
        return self.deps.paths(run)

    def discard_slot(self, slot: PoolSlot, folder: Path, problems: list[str]) -> None:
        discard_slot(self.deps, slot, folder, problems)

"""Pruning old runs' records: logs, decision logs and harvested bundle copies under .launcher/runs/.

Only records whose work is elsewhere are pruned: the run's commits are on its branch and refs,
its worktree (if kept) is untouched. A run whose work is kept *only* in its record (unharvested,
or stopped at a bound before its harvest completed) is never pruned: `launcher import` or
`launcher rm` is for those. The run's row stays in the coordinator, marked `pruned`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial

from launcher.core.gc import GcAction, GcReport, act
from launcher.core.run.deps import RunDeps
from launcher.core.transitions import TERMINAL_RUN_STATES, RunState
from launcher.models import RunRecord


@dataclass(frozen=True)
class PruneRules:
    older_than: float | None = None  # seconds since the run ended
    max_bytes: int | None = None  # the most all prunable records may hold together


def prune_records(deps: RunDeps, report: GcReport, rules: PruneRules, *, now: float | None = None) -> None:
    moment = time.time() if now is None else now
    candidates = sorted(
        (run for run in deps.store.list_runs(states=TERMINAL_RUN_STATES) if record_prunable(deps, run)),
        key=lambda run: run.ended_at or run.updated_at,
    )
    sizes = {run.id: deps.workspace.disk_usage([deps.paths(run).record]) for run in candidates}
    total = sum(sizes.values())
    for run in candidates:
        ended = (run.ended_at or run.updated_at).timestamp()
        too_old = rules.older_than is not None and moment - ended > rules.older_than
        too_big = rules.max_bytes is not None and total > rules.max_bytes
        if not (too_old or too_big):
            continue
        why = (
            f"ended {age_text(moment - ended)} ago"
            if too_old
            else f"records hold {total} bytes, over {rules.max_bytes}"
        )
        act(
            report,
            GcAction(kind="prune-record", target=str(deps.paths(run).record), reason=f"{run.id} {why}"),
            partial(prune_record, deps, run),
        )
        total -= sizes[run.id]


def record_holds_work(run: RunRecord) -> bool:
    """Its record folder keeps work kept nowhere else (a complete harvest put it all in refs)."""
    if run.state is RunState.UNHARVESTED:
        return True
    harvest = run.details.harvest
    return harvest is not None and bool(harvest.error or harvest.kept_sandbox or harvest.kept_worktree)


def record_prunable(deps: RunDeps, run: RunRecord) -> bool:
    if run.details.pruned or record_holds_work(run):
        return False
    return deps.paths(run).record.exists()


def prune_record(deps: RunDeps, run: RunRecord) -> None:
    deps.workspace.remove_tree(deps.paths(run).record)
    deps.store.update_run(run.id, details={"pruned": True})


def age_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"

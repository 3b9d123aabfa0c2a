"""While the agent runs: its deadline, how it ended. (Its output: launcher.core.run.output.)"""

from __future__ import annotations

from launcher.core.run.deps import RunDeps
from launcher.core.run.disk import DiskWatch
from launcher.core.run.output import Echo
from launcher.core.run.request import Ending, RunPlan
from launcher.core.runlayout import RunPaths
from launcher.models import RunRecord

__all__ = ["KILL_WAIT_S", "Echo", "supervise"]

# How long a stopped agent's container gets to go once its grace period is over.
KILL_WAIT_S = 60.0


def supervise(
    deps: RunDeps, run: RunRecord, container_id: str, plan: RunPlan, paths: RunPaths
) -> tuple[Ending, int | None]:
    """Wait for the agent (stopping it at its deadline: SIGTERM, its grace, SIGKILL; at a disk
    bound: SIGKILL); how it ended and its exit code."""
    sandbox = deps.sandbox
    with DiskWatch(deps, run.id, paths, container_id) as disk:
        code = sandbox.wait(container_id, plan.timeout)
        ending: Ending
        if code is None:
            sandbox.stop(container_id, plan.grace)
            code = sandbox.wait(container_id, KILL_WAIT_S)
            ending = "timed-out"
        else:
            ending = "exited" if code == 0 else "failed"
    state = sandbox.inspect_state(container_id) or {}
    if state.get("OOMKilled"):
        # Recorded, not retried: the agent outgrew its memory limit.
        deps.store.update_run(run.id, details={"oom_killed": True, "memory_limit": deps.defaults.memory})
    if deps.store.get_run(run.id).cancel_requested:
        ending = "cancelled"
    if disk.exceeded is not None:
        ending = "exceeded"
    return ending, code

"""The claim: the coordinator allocates the run (ID, attempt, branch) and the plan is recorded."""

from __future__ import annotations

from launcher.core import uids
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import RunPlan
from launcher.models import NewRun, RunOwner, RunRecord
from launcher.models.details import NetworkChoice, RunDetails


def claim_run(deps: RunDeps, plan: RunPlan, owner: RunOwner) -> RunRecord:
    deps.checkpoint("before:claim")
    run = deps.store.create_run(
        NewRun(task_id=plan.task.id, image=plan.image, owner=owner, worktrees_dir=str(deps.worktrees_dir))
    )
    uid, _ = uids.run_ids(run.seq, deps.defaults)
    deps.checkpoint("after:claim")
    planned = RunDetails(
        base_sha=plan.base_sha,
        base_branch=plan.base_branch,
        command=plan.command,
        network=NetworkChoice.model_validate(plan.egress.describe()),
        timeout=plan.timeout,
        keep_worktree=plan.keep_worktree,
        sparse=plan.sparse,
        secrets=sorted(plan.secrets),
        repo=str(plan.repo.toplevel),
        log=str(deps.paths(run).log),
        grace=plan.grace,
    )
    return deps.store.update_run(run.id, uid=uid, details=planned.model_dump(mode="json"))

"""The claim: the task's lease is taken, then the coordinator allocates the run (ID, attempt,
branch) and the plan is recorded. Refused before anything exists while another live run holds
the task (launcher.core.run.claim_lease).

The run records its claim's fencing token (``details.claim.fence``), its own or its batch's; a
``--concurrent`` run that went ahead without a claim has none and is not fenced.
"""

from __future__ import annotations

from launcher.core import uids
from launcher.core.run.claim_lease import RunClaim, held_by_batch_of, keep_alive, run_lease_owner
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import RunPlan
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import TaskClaimedError
from launcher.models import NewRun, RunOwner, RunRecord
from launcher.models.details import NetworkChoice, RunDetails


def claim_run(deps: RunDeps, plan: RunPlan, owner: RunOwner) -> RunRecord:
    deps.checkpoint("before:claim")
    claim = take_claim(deps, plan, owner)
    try:
        run = deps.store.create_run(
            NewRun(task_id=plan.task.id, image=plan.image, owner=owner, worktrees_dir=str(deps.worktrees_dir))
        )
    except BaseException:
        give_back(deps, plan.task.id, claim, done=False)
        raise
    keep_alive(deps.store, plan.task.id, run.id, claim, deps.defaults.claim_lease)
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
        devcontainer=plan.devcontainer,
        environment_notes=plan.environment_notes or None,
        labels=plan.labels or None,
    )
    details = {**planned.model_dump(mode="json"), "claim": claim.recorded()}
    return deps.store.update_run(run.id, uid=uid, details=details)


def take_claim(deps: RunDeps, plan: RunPlan, owner: RunOwner) -> RunClaim:
    """The task's claim for a run supervised by ``owner``, or TaskClaimedError naming who holds it."""
    task_id = plan.task.id
    held = deps.store.get_task(task_id)
    holder = held.lease_owner
    if held_by_batch_of(owner, holder):
        # A batch worker of this very process claimed the task for this run: the batch renews
        # and releases that claim. (Its lease is the batch's --lease: it is not re-taken here.)
        # We hold that lease, so the count read with its owner is the batch's token.
        return RunClaim(owner=holder, fence=held.claims, borrowed=True)
    lease_owner = run_lease_owner(owner)
    try:
        task = deps.store.claim_task(task_id, lease_owner, deps.defaults.claim_lease)
    except TaskClaimedError:
        if plan.concurrent:
            return RunClaim(owner=None)
        raise refusal(deps, task_id) from None
    return RunClaim(owner=lease_owner, fence=task.claims)


def refusal(deps: RunDeps, task_id: str) -> TaskClaimedError:
    """Who holds the task's claim and what their run is doing, as the error says it."""
    holder = deps.store.get_task(task_id).lease_owner or "another launcher"
    live = deps.store.list_runs(task_id=task_id, states=LIVE_RUN_STATES)
    ours = [r for r in live if r.owner is not None and holder.startswith(f"{r.owner.host}:{r.owner.pid}:")]
    runs = ours or live
    if runs:
        held = ", ".join(f"run {r.id} ({r.state.value}, branch {r.branch})" for r in runs)
        what = f"its {held}" if ours else f"live: {held}"
    else:
        what = "no run of it is recorded yet (it is being prepared)"
    return TaskClaimedError(
        f"task {task_id} is claimed by {holder}: {what}",
        hint=(
            "another job is running it: wait for it (`launcher ps`), or pass --concurrent for a second "
            f"attempt at once. A claim whose launcher died expires within {deps.defaults.claim_lease:g} s "
            "(then `launcher gc` settles its run)."
        ),
    )


def give_back(deps: RunDeps, task_id: str, claim: RunClaim, *, done: bool) -> bool:
    """Release the run's own claim (``done``: the task also leaves the queue); False when the
    run held none of its own, or had lost it."""
    if claim.owner is None or claim.borrowed:
        return False
    return deps.store.release_claim(task_id, claim.owner, done=done)

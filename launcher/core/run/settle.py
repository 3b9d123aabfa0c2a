"""Settle: harvest what the run made, record how it ended, then take the run apart.

Every problem is collected instead of stopping at the first, and the record says what went
wrong. Capture before you delete: the worktree and private git dir go only once everything the
agent made is in the repository (its branch, its refs); a harvest that could not complete keeps
them, and the run ends ``unharvested`` whatever the agent did. What the result does not need
(the dead container, the network, the retired worktree and sandbox folders) is removed after
the ending is recorded, by launcher/core/run/teardown.py, under the run's teardown lock.

Fenced: the run's own ending is written only while its claim is the task's newest (a
compare-and-set on the claim's token, in the transaction that writes the state). A run a newer
claim took the task from (its box cut off, paused or slow past its lease) ends ``superseded``
instead, from a live state or from the ``lost`` another box's batch gave it meanwhile: its
harvest is done and recorded all the same (its work is on its own branch, never dropped), its
task changes are not applied, its claim release cannot touch the newer holder's lease. A newer
attempt's record is another row and is never written here. Whoever settles a dead run's record
(gc, stop, a batch taking over) records what happened to it (``lost``, ``cancelled``), and its
task changes go in only while its claim is still the newest.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launcher.core.ports import RepoPort
from launcher.core.run.claim_lease import fence_of, run_lease_owner, stop_renewal
from launcher.core.run.deps import RunDeps
from launcher.core.run.harvest import SCOPE, Harvest, harvest_commits
from launcher.core.run.outcome import RunOutcome
from launcher.core.run.request import Ending
from launcher.core.run.services import close_sidecars
from launcher.core.run.task_changes import apply_task_changes, read_agent_result
from launcher.core.run.teardown import Teardown, take_apart
from launcher.core.runlayout import TRASH_PREFIX, RunPaths
from launcher.core.transitions import LIVE_RUN_STATES, SUPERSEDABLE_RUN_STATES, RunState
from launcher.errors import FencedOutError, LauncherError, TransitionConflictError
from launcher.models import RunRecord, iso, utcnow
from launcher.models.details import HarvestDetails, SetupDetails, SupersededDetails

# The entry's exit status when a setup command failed (then out/setup-failed says which).
SETUP_FAILED_EXIT = 121


def settle(deps: RunDeps, outcome: RunOutcome, *, release: bool = True) -> RunRecord:
    """Settle the run; ``release=False`` keeps its claim (the caller publishes first, under it,
    then calls ``release_claim``)."""
    problems: list[str] = [outcome.error] if outcome.error else []
    details: dict[str, Any] = {"infrastructure_failure": outcome.infrastructure}
    step, paths, repo = deps.checkpoint, outcome.paths, outcome.repo
    current = deps.store.get_run(outcome.run.id)
    fence = fence_of(current)
    if current.container_id:
        try:
            # Dead before the harvest reads what it wrote; removed after the ending (teardown).
            deps.sandbox.kill(current.container_id)
        except LauncherError as exc:
            problems.append(f"container cleanup: {exc}")
    # Before the network goes: the services' logs are kept first, the relay lets go of its ports.
    close_sidecars(deps, current, paths, problems)
    egress = deps.egress.capture(current, paths.egress_log, problems) if deps.egress is not None else None
    step("before:harvest")
    harvest: Harvest | None = None
    if repo is not None and paths.git_dir.exists():
        try:
            harvest = harvest_commits(deps, repo, current, paths, outcome.image)
        except LauncherError as exc:
            # The machinery failed (a lock, the disk): nothing is known to be kept yet.
            harvest = Harvest(HarvestDetails(error=str(exc)), captured=False, complete=False)
        if not harvest.complete:
            problems.append(f"harvest: {harvest.details.error}")
    step("before:transition")
    try:
        changes = apply_task_changes(deps, current, paths, fence=fence)
        details["task_changes"] = changes.model_dump(mode="json") if changes is not None else None
    except LauncherError as exc:
        problems.append(f"task changes: {exc}")
    details["agent_result"] = read_agent_result(paths).model_dump(mode="json", exclude_none=True)
    setup = setup_failure(deps, outcome)
    if setup is not None:
        details["setup"] = setup.model_dump(mode="json")
        # First: it is why the run failed, and the agent never ran.
        problems.insert(0, f"setup failed: `{setup.failed_command}` exited {setup.exit_code}; the agent did not run")
    if egress is not None:
        recorded = current.details.egress.model_dump(mode="json") if current.details.egress else {}
        details["egress"] = {**recorded, **egress.model_dump()}
    step("before:cleanup")
    leftovers: list[Path] = []
    kept = clean_folders(
        deps, repo, current, paths, outcome.keep, harvest=harvest, problems=problems, leftovers=leftovers
    )
    step("after:cleanup")
    state = RunState(outcome.ending)
    if harvest is not None:
        taken = harvest.details
        if not harvest.complete:
            # A run stopped at its disk bound says so first; what it left is kept all the same.
            state = RunState.EXCEEDED if outcome.ending == "exceeded" else RunState.UNHARVESTED
            taken = taken.model_copy(update={"ending": outcome.ending, **kept})
            problems += _kept_lines(taken)
            if "kept_worktree" in kept:
                # gc leaves a kept worktree alone; `launcher rm` removes it.
                details["keep_worktree"] = True
        details["harvest"] = taken.model_dump(mode="json")
    # Before the ending: whoever sees the run settled sees its teardown in progress too.
    hold = deps.teardown_locks.hold(current.id)
    try:
        settled = _record_ending(deps, current, outcome, state, details, problems, fence if outcome.own else None)
        if release:
            # Before the teardown: the task is free once its result is written, not once it is removed.
            settled = release_claim(deps, settled)
    except BaseException:
        hold.release()
        raise
    teardown = Teardown(settled, current.container_id, leftovers, hold)
    if deps.teardowns is not None:
        deps.teardowns.add(teardown)
    else:
        take_apart(deps, teardown)
    return settled


def _record_ending(
    deps: RunDeps,
    run: RunRecord,
    outcome: RunOutcome,
    state: RunState,
    details: dict[str, Any],
    problems: list[str],
    fence: int | None,
) -> RunRecord:
    """Write the run's ending: ``state`` while its claim holds, ``superseded`` once a newer one
    took the task over, or only the details when someone settled it first (their verdict stands)."""
    store, ended = deps.store, utcnow()
    try:
        return store.update_run(
            run.id,
            expected=LIVE_RUN_STATES,
            fence=fence,
            state=state,
            exit_code=outcome.exit_code,
            ended_at=ended,
            details={**details, **({"errors": problems} if problems else {})},
            detail=problems[0] if problems else None,
        )
    except FencedOutError as out:
        # Not the task's result, whatever the agent did: kept and said, first.
        superseded = SupersededDetails(fence=out.fence, current=out.current, holder=out.holder, at=iso(ended))
        held = f" (held by {out.holder})" if out.holder else ""
        why = (
            f"superseded: claim #{out.current}{held} took task {run.task_id} over from this run's claim "
            f"#{out.fence}; its work is kept on {run.branch}, not the task's result"
        )
        problems = [why, *problems]
        details = {**details, "errors": problems}
        try:
            return store.update_run(
                run.id,
                expected=SUPERSEDABLE_RUN_STATES,
                state=RunState.SUPERSEDED,
                exit_code=outcome.exit_code,
                ended_at=ended,
                details={**details, "superseded": superseded.model_dump(mode="json")},
                detail=why,
            )
        except TransitionConflictError:
            # Settled already, superseded or otherwise (someone's verdict stands): add what we learnt.
            return store.update_run(run.id, details=details)
    except TransitionConflictError:
        # Someone (gc, stop) settled it first; keep their verdict, add what we learnt.
        return store.update_run(run.id, details={**details, **({"errors": problems} if problems else {})})


def setup_failure(deps: RunDeps, outcome: RunOutcome) -> SetupDetails | None:
    """What the entry wrote when a setup command failed (it then exits SETUP_FAILED_EXIT)."""
    if outcome.ending != "failed" or outcome.exit_code != SETUP_FAILED_EXIT:
        return None
    try:
        data = deps.workspace.read_in(outcome.paths.out_dir, ["setup-failed"], max_bytes=64 * 1024)
    except LauncherError:
        return None
    if data is None:
        return None
    status, _, command = data.decode("utf-8", "replace").partition("\n")
    try:
        code: int | None = int(status.strip())
    except ValueError:
        code = None
    return SetupDetails(failed_command=command.rstrip("\n")[:4000], exit_code=code)


def release_claim(deps: RunDeps, run: RunRecord) -> RunRecord:
    """Give back the task's claim the run took (not a batch's it ran under), now that it is
    settled; a run that exited 0 also takes its task off the queue (how `launcher matrix` knows
    it is done). Whoever settles it may: the claim's owner is known from the run's owner."""
    stop_renewal(run.id)
    claim = run.details.claim
    if run.owner is None or (claim is not None and (claim.owner is None or claim.borrowed)):
        # No claim of its own: none (--concurrent), or its batch's, which the batch releases.
        return run
    try:
        # By owner and token: a superseded run's release never touches the newer holder's lease.
        deps.store.release_claim(
            run.task_id, run_lease_owner(run.owner), done=run.state is RunState.EXITED, fence=fence_of(run)
        )
    except LauncherError as exc:
        # The claim then expires by itself ([run] claim_lease); the run's result stands.
        return deps.store.update_run(run.id, details={"errors": [*(run.details.errors or []), f"claim: {exc}"]})
    return run


def _kept_lines(harvest: HarvestDetails) -> list[str]:
    """What an unharvested run's record (and `launcher run`) says after why: what is kept, how to recover."""
    kept = [
        f"{what} {where}"
        for what, where in (
            ("bundle", harvest.bundle),
            ("worktree (the agent's files, its uid's: look, do not run git there as yourself)", harvest.kept_worktree),
            ("private git dir and out/", harvest.kept_sandbox),
        )
        if where
    ]
    kept += [f"ref {ref}" for ref in sorted(harvest.refs)]
    lines = ["kept: " + "; ".join(kept)] if kept else []
    return lines + [f"recover: {how}" for how in harvest.recover]


def settle_record(deps: RunDeps, run: RunRecord, ending: Ending, reason: str | None) -> RunRecord:
    """Settle a run from its record alone (its launcher is gone): gc, stop, a batch taking over."""
    return settle(
        deps,
        RunOutcome(
            run=run,
            paths=deps.paths(run),
            repo=deps.recorded_repo(run),
            ending=ending,
            error=reason,
            keep=bool(run.details.keep_worktree),
            image=run.image,
            own=False,
        ),
    )


def clean_folders(
    deps: RunDeps,
    repo: RepoPort | None,
    run: RunRecord,
    paths: RunPaths,
    keep: bool,
    *,
    harvest: Harvest | None,
    problems: list[str],
    leftovers: list[Path] | None = None,
) -> dict[str, str]:
    """Remove the worktree, or check the branch out afresh there, then remove the sandbox folder.

    Each step even if one failed. What stays because it holds work kept nowhere else (an
    incomplete harvest) is returned: ``kept_worktree`` and ``kept_sandbox``. With
    ``leftovers``, the folders to delete are put there instead (the worktree already taken out
    of its repository): the run's teardown deletes them after its ending is recorded.
    """
    ws = deps.workspace
    kept: dict[str, str] = {}
    if harvest is not None and not harvest.complete and (keep or not harvest.captured):
        # Nothing of the agent's is deleted or handed over: the worktree stays as it is (its
        # files still the run's uid's, so git's ownership check guards anyone who looks),
        # and the private git dir, holding objects no bundle carried, goes into the record.
        if paths.worktree.exists():
            kept["kept_worktree"] = str(paths.worktree)
        if not harvest.captured:
            if paths.sandbox.exists():
                try:
                    kept["kept_sandbox"] = str(ws.keep_sandbox(paths))
                except (LauncherError, OSError) as exc:
                    # Left where it is, then: deleting it would delete the run's commits.
                    problems.append(f"cleanup: the run's sandbox stays at {paths.sandbox}: {exc}")
                    kept["kept_sandbox"] = str(paths.sandbox)
            return kept
    elif keep and repo is not None and paths.worktree.exists():
        with _collected(problems, "cleanup"):
            hand_back(deps, repo, run, paths, harvest.details if harvest is not None else None)
    elif leftovers is not None:
        with _collected(problems, "cleanup"):
            leftovers.append(retire_to_trash(deps, repo, paths.worktree))
        leftovers.append(paths.sandbox)
        return kept
    else:
        with _collected(problems, "cleanup"):
            remove_worktree(deps, repo, paths)
    with _collected(problems, "cleanup"):
        ws.remove_tree(paths.sandbox)
    return kept


def hand_back(deps: RunDeps, repo: RepoPort, run: RunRecord, paths: RunPaths, harvest: HarvestDetails | None) -> None:
    """A kept worktree: the host's own fresh checkout of the run's branch, never the agent's files.

    The agent's folder goes first (anything it planted, a nested repository's `.git` included,
    goes with it); host git then checks the branch out from the repository's fsck-checked
    objects, as the repository's owner, and puts the captured uncommitted work back as
    uncommitted changes. No rename crosses file systems, and git gives the files their modes.
    """
    retire_folder(deps, repo, paths.worktree)
    deps.workspace.prepare_worktree_dir(paths.worktree, *repo.owner_ids)
    repo.check_out_worktree(paths.worktree, run.branch)
    if harvest is not None and harvest.wip and harvest.tip:
        # Without .case/: the run's scope stays in its record, as on its branch.
        repo.apply_tree(paths.worktree, repo.tree_with_entry_of(harvest.wip, SCOPE, harvest.tip))


def remove_worktree(deps: RunDeps, repo: RepoPort | None, paths: RunPaths) -> None:
    retire_folder(deps, repo, paths.worktree)


def retire_folder(deps: RunDeps, repo: RepoPort | None, worktree: Path) -> None:
    """Remove a worktree folder (a run's or a warm slot's) and the repository's record of it."""
    deps.workspace.remove_tree(retire_to_trash(deps, repo, worktree))


def retire_to_trash(deps: RunDeps, repo: RepoPort | None, worktree: Path) -> Path:
    """Take a worktree folder out of its repository (a rename, quick): the folder to delete."""
    if repo is None:
        return worktree
    trash = deps.worktrees_dir / f"{TRASH_PREFIX}{worktree.name}-{secrets.token_hex(4)}"
    repo.retire_worktree(worktree, trash)
    return trash


@contextmanager
def _collected(problems: list[str], what: str) -> Iterator[None]:
    try:
        yield
    except (LauncherError, OSError) as exc:
        problems.append(f"{what}: {exc}")

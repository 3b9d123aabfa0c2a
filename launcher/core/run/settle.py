"""Settle: harvest what the run made, remove its container and folders, record how it ended.

Every problem is collected instead of stopping at the first: a failed harvest must not leave a
container or a worktree behind, and the record says what went wrong.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launcher.core.netpolicy import EgressSummary
from launcher.core.ports import RepoPort
from launcher.core.run.deps import RunDeps
from launcher.core.run.harvest import harvest_commits
from launcher.core.run.outcome import RunOutcome
from launcher.core.run.request import Ending
from launcher.core.run.task_changes import apply_task_changes, read_agent_result
from launcher.core.runlayout import TRASH_PREFIX, RunPaths
from launcher.core.transitions import LIVE_RUN_STATES, RunState
from launcher.errors import LauncherError, TransitionConflictError
from launcher.models import RunRecord, utcnow
from launcher.models.details import HarvestDetails


def settle(deps: RunDeps, outcome: RunOutcome) -> RunRecord:
    problems: list[str] = [outcome.error] if outcome.error else []
    details: dict[str, Any] = {"infrastructure_failure": outcome.infrastructure}
    step, paths, repo = deps.checkpoint, outcome.paths, outcome.repo
    current = deps.store.get_run(outcome.run.id)
    if current.container_id:
        try:
            deps.sandbox.kill(current.container_id)
            deps.sandbox.remove(current.container_id)
        except LauncherError as exc:
            problems.append(f"container cleanup: {exc}")
    egress_closed = _close_network_meanwhile(deps, current, paths, problems)
    step("before:harvest")
    harvest: HarvestDetails | None = None
    if repo is not None and paths.git_dir.exists():
        try:
            harvest = harvest_commits(deps, repo, current, paths, outcome.ending, outcome.image)
        except LauncherError as exc:
            problems.append(f"harvest: {exc}")
            harvest = HarvestDetails(error=str(exc))
        details["harvest"] = harvest.model_dump(mode="json")
    step("before:transition")
    try:
        changes = apply_task_changes(deps, current, paths)
        details["task_changes"] = changes.model_dump(mode="json") if changes is not None else None
    except LauncherError as exc:
        problems.append(f"task changes: {exc}")
    details["agent_result"] = read_agent_result(paths).model_dump(mode="json", exclude_none=True)
    if egress_closed is not None:
        summary = egress_closed.result()
        if summary is not None:
            recorded = current.details.egress.model_dump(mode="json") if current.details.egress else {}
            details["egress"] = {**recorded, **summary.model_dump()}
    step("before:cleanup")
    clean_folders(deps, repo, current, paths, outcome.keep, tip=harvest.tip if harvest else None, problems=problems)
    step("after:cleanup")
    if problems:
        details["errors"] = problems
    try:
        return deps.store.update_run(
            current.id,
            expected=LIVE_RUN_STATES,
            state=RunState(outcome.ending),
            exit_code=outcome.exit_code,
            ended_at=utcnow(),
            details=details,
            detail=problems[0] if problems else None,
        )
    except TransitionConflictError:
        # Someone (gc, stop) settled it first; keep their verdict, add what we learnt.
        return deps.store.update_run(current.id, details=details)


def _close_network_meanwhile(
    deps: RunDeps, run: RunRecord, paths: RunPaths, problems: list[str]
) -> Future[EgressSummary | None] | None:
    """The network comes down (Docker round trips) while the harvest runs (git)."""
    if deps.egress is None:
        return None
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"egress-{run.id}")
    closed = pool.submit(deps.egress.close, run, paths.egress_log, problems)
    pool.shutdown(wait=False)
    return closed


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
        ),
    )


def clean_folders(
    deps: RunDeps,
    repo: RepoPort | None,
    run: RunRecord,
    paths: RunPaths,
    keep: bool,
    *,
    tip: str | None,
    problems: list[str],
) -> None:
    """Hand back or remove the worktree, then remove the sandbox folder: each step even if one failed."""
    ws = deps.workspace
    if keep and repo is not None and paths.worktree.exists():
        with _collected(problems, "cleanup"):
            # The run's scope moves to its host-only record: the markers stay inspectable and
            # the kept worktree is a clean checkout of the branch (.case/ was only excluded
            # by the run's private git dir, which the host's git does not read).
            ws.move_out(paths.worktree / ".case", paths.record / "case-scope")
            ws.chown_tree(paths.worktree, *repo.owner_ids)
            admin = repo.worktree_admin(paths.worktree)
            if admin is not None and admin.is_dir():
                repo.read_tree_into_worktree_index(admin, str(tip or run.details.base_sha))
    else:
        with _collected(problems, "cleanup"):
            remove_worktree(deps, repo, paths)
    with _collected(problems, "cleanup"):
        ws.remove_tree(paths.sandbox)


def remove_worktree(deps: RunDeps, repo: RepoPort | None, paths: RunPaths) -> None:
    retire_folder(deps, repo, paths.worktree)


def retire_folder(deps: RunDeps, repo: RepoPort | None, worktree: Path) -> None:
    """Remove a worktree folder (a run's or a warm slot's) and the repository's record of it."""
    if repo is None:
        deps.workspace.remove_tree(worktree)
        return
    trash = deps.worktrees_dir / f"{TRASH_PREFIX}{worktree.name}-{secrets.token_hex(4)}"
    repo.retire_worktree(worktree, trash)
    deps.workspace.remove_tree(trash)


@contextmanager
def _collected(problems: list[str], what: str) -> Iterator[None]:
    try:
        yield
    except (LauncherError, OSError) as exc:
        problems.append(f"{what}: {exc}")

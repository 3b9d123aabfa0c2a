"""`launcher prune`: delete run branches (and their records) whose work is elsewhere, or old ones.

Chosen by what they hold: ``empty`` (no commit beyond the run's base), ``merged`` (the tip is in
the base branch, which names the branch the run started from), ``older_than`` (the run ended
that long ago). A branch with commits its base branch lacks, or with kept refs
(``refs/launcher/runs/<run>/``: other branches, stashes, uncommitted work) that hold such
commits, goes only with ``force``. Never:
- a live run's branch (only ended runs are looked at);
- a run whose record holds work kept nowhere else (unharvested, a harvest that stopped, a kept
  sandbox or worktree): `launcher import` or `launcher rm` is for those;
- a branch checked out in a worktree, or one that moved since it was looked at: the deletion
  is one compare-and-set transaction (branch and kept refs, all or none) under the repository's
  lock, so a branch someone moved is kept and reported.

The run's row stays in the coordinator (its attempt and run numbers are never handed out
again, so no branch name or uid is ever reused), marked with ``branch_pruned``; its record
folder under .launcher/runs/ goes as `gc --older-than` prunes it (``details.pruned``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from launcher.core.ports.results import ResultsGit
from launcher.core.prune import age_text, prune_record, record_holds_work, record_prunable
from launcher.core.results import OpenResults
from launcher.core.run.deps import RunDeps
from launcher.core.run.harvest import run_refs
from launcher.core.transitions import TERMINAL_RUN_STATES
from launcher.errors import LauncherError
from launcher.models import RunRecord
from launcher.models.common import iso

KeptBecause = Literal["unmerged", "record-holds-work", "checked-out", "moved", "repository"]


@dataclass(frozen=True)
class BranchRules:
    merged: bool = False
    empty: bool = False
    older_than: float | None = None  # seconds since the run ended
    force: bool = False

    @property
    def any(self) -> bool:
        return self.merged or self.empty or self.older_than is not None


class PruneItem(BaseModel):
    run_id: str
    branch: str
    repo: str | None
    tip: str | None = None
    chosen: list[str] = Field(description="why prune looked at it: empty, merged into BRANCH, ended … ago")
    action: Literal["deleted", "would-delete", "kept"]
    kept_because: KeptBecause | None = None
    reason: str | None = Field(default=None, description="why it was kept, and what to do")
    refs: list[str] = Field(default_factory=list, description="the run's kept refs deleted with the branch")
    record_removed: bool = Field(default=False, description="its record folder under .launcher/runs/ went too")


class PruneReport(BaseModel):
    dry_run: bool
    items: list[PruneItem] = Field(default_factory=list)

    @property
    def moved(self) -> list[PruneItem]:
        return [item for item in self.items if item.kept_because == "moved"]


def prune_branches(
    deps: RunDeps, open_git: OpenResults, rules: BranchRules, *, dry_run: bool, now: float | None = None
) -> PruneReport:
    moment = time.time() if now is None else now
    report = PruneReport(dry_run=dry_run)
    repos: dict[str, ResultsGit | LauncherError] = {}
    for run in deps.store.list_runs(states=TERMINAL_RUN_STATES):
        where, base = run.details.repo, run.details.base_sha
        if where is None or base is None or run.details.branch_pruned:
            continue
        if where not in repos:
            try:
                repos[where] = open_git(where)
            except LauncherError as exc:
                repos[where] = exc
        item = _consider(deps, repos[where], run, base, rules, dry_run=dry_run, now=moment)
        if item is not None:
            report.items.append(item)
    return report


def _consider(
    deps: RunDeps,
    git: ResultsGit | LauncherError,
    run: RunRecord,
    base: str,
    rules: BranchRules,
    *,
    dry_run: bool,
    now: float,
) -> PruneItem | None:
    ended = (run.ended_at or run.updated_at).timestamp()
    old = rules.older_than is not None and now - ended > rules.older_than
    item = PruneItem(run_id=run.id, branch=run.branch, repo=run.details.repo, chosen=[], action="kept")
    if isinstance(git, LauncherError):
        if not old:
            return None
        return _kept(
            item, [f"ended {age_text(now - ended)} ago"], "repository", f"its repository is not usable here: {git}"
        )
    tip = git.ref_value(f"refs/heads/{run.branch}")
    if tip is None:
        return None  # gone already (by hand, or a prune that stopped before marking the run)
    base_branch = run.details.base_branch
    onto = git.ref_value(f"refs/heads/{base_branch}") if base_branch else None
    empty = git.is_ancestor(tip, base)
    merged = onto is not None and git.is_ancestor(tip, onto)
    chosen = []
    if rules.empty and empty:
        chosen.append("no commits beyond its base")
    if rules.merged and merged and not (rules.empty and empty):
        chosen.append(f"merged into {base_branch}")
    if old:
        chosen.append(f"ended {age_text(now - ended)} ago")
    if not chosen:
        return None
    item = item.model_copy(update={"tip": tip})
    if record_holds_work(run):
        why = "its record holds work kept nowhere else"
        return _kept(item, chosen, "record-holds-work", f"{why}; `launcher import {run.id}` puts it on a branch")
    refs = git.refs_under(f"{run_refs(run.id)}/")
    # A kept ref (another branch of the run, a stash, its uncommitted work) is work too.
    keeps = [ref for ref, sha in refs.items() if not git.is_ancestor(sha, onto or base)]
    if not rules.force and (not (empty or merged) or keeps):
        lost = []
        if not (empty or merged):
            lost.append(f"{git.commit_count(onto or base, tip)} commit(s) not in {base_branch or 'its base'}")
        if keeps:
            lost.append(f"{len(keeps)} kept ref(s) with work ({', '.join(keeps[:3])})")
        return _kept(item, chosen, "unmerged", f"{'; '.join(lost)}: --force deletes it anyway")
    item = item.model_copy(update={"chosen": chosen, "refs": sorted(refs)})
    where = git.checked_out().get(run.branch)
    if where is not None:
        return _kept(item, chosen, "checked-out", f"checked out at {where}; `git worktree remove` it first")
    if dry_run:
        return item.model_copy(update={"action": "would-delete"})
    moved = git.delete_refs({f"refs/heads/{run.branch}": tip, **refs})
    if moved is not None:
        return _kept(item, chosen, "moved", f"left alone: {moved}")
    mark = {"tip": tip, "refs": sorted(refs), "at": iso(datetime.fromtimestamp(now, UTC))}
    deps.store.update_run(run.id, details={"branch_pruned": mark})
    removed, note = record_prunable(deps, run), None
    if removed:
        try:
            prune_record(deps, run)
        except (LauncherError, OSError) as exc:
            # The branch is gone either way; a record folder left is what `gc --older-than` takes.
            removed, note = False, f"its record folder stays: {exc}"
    return item.model_copy(update={"action": "deleted", "record_removed": removed, "reason": note})


def _kept(item: PruneItem, chosen: list[str], because: KeptBecause, reason: str) -> PruneItem:
    return item.model_copy(update={"chosen": chosen, "action": "kept", "kept_because": because, "reason": reason})

"""A run's result back in a person's repository: `diff`, `merge`, `apply`, `checkout`.

All of it is host git on the repository the run was made in (its record's ``details.repo``),
through ``ResultsGit``: the run's branch against its base, the main checkout as the only work
tree written to. Nothing is changed unless it can be changed whole: a dirty checkout is
refused before anything happens, a conflicting merge is aborted, a conflicting apply is
refused after a dry three-way merge that touches no file.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from launcher.core.ports import Coordinator
from launcher.core.ports.results import FileChange, MergeMode, ResultsGit
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import GitError, InvalidInputError, LauncherError, NotFoundError
from launcher.models import Frozen, RunRecord

OpenResults = Callable[[str], ResultsGit]
_How = Literal["fast-forward", "merge-commit", "squash", "up-to-date"]
# How many paths an error names before it says "and N more".
_NAMED = 10


@dataclass
class ResultsDeps:
    store: Coordinator
    open_git: OpenResults
    # Where `launcher checkout RUN` puts a run's checkout when no PATH is given.
    checkouts_dir: Path


class DiffResult(Frozen):
    run_id: str
    branch: str
    base: str
    tip: str
    commits: int = Field(description="commits on the branch beyond its base")
    files: list[FileChange]
    insertions: int
    deletions: int
    patch: str | None = Field(default=None, description="the diff as git prints it (absent with --stat)")
    stat: str | None = Field(default=None, description="git's --stat (only with --stat)")


class MergeResult(Frozen):
    run_id: str
    branch: str
    tip: str
    into: str
    how: _How
    head: str = Field(description="where BRANCH points now")
    checkout: str | None = Field(description="the checkout the merge happened in; None: the ref moved alone")


class ApplyResult(Frozen):
    run_id: str
    branch: str
    tip: str
    checkout: str
    files: list[str] = Field(description="paths now changed (staged, uncommitted) in the checkout")


class CheckoutResult(Frozen):
    run_id: str
    branch: str
    tip: str
    path: str


@dataclass(frozen=True)
class _Target:
    run: RunRecord
    git: ResultsGit
    base: str
    tip: str


def _shown(paths: list[str]) -> str:
    """Paths as an error names them: an agent chose them, so control characters are escaped."""
    names = ", ".join(json.dumps(p)[1:-1] for p in paths[:_NAMED])
    return names + (f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else "")


def _target(deps: ResultsDeps, run_id: str, *, ended: bool) -> _Target:
    run = deps.store.get_run(run_id)
    if ended and run.state in LIVE_RUN_STATES:
        raise InvalidInputError(
            f"run {run.id} is still {run.state.value}",
            hint="its commits reach its branch when it ends; `launcher ps` shows it",
        )
    base, where = run.details.base_sha, run.details.repo
    if base is None or where is None:
        raise NotFoundError(
            f"run {run.id} has no base commit or repository recorded",
            hint="it ended before its worktree was made: it has no changes",
        )
    try:
        git = deps.open_git(where)
    except LauncherError as exc:
        raise NotFoundError(
            f"the repository of run {run.id} ({where}) is not usable here: {exc.message}",
            hint="results are taken from the repository the run was made in, on the machine it ran on",
        ) from exc
    tip = git.ref_value(f"refs/heads/{run.branch}")
    if tip is None:
        raise NotFoundError(
            f"the branch {run.branch} of run {run.id} is gone from {git.toplevel}",
            hint="`launcher prune` deletes run branches; `git reflog` may still know its commits",
        )
    return _Target(run, git, base, tip)


def diff(deps: ResultsDeps, run_id: str, *, stat: bool) -> tuple[DiffResult, bytes]:
    """The run's changes, base..branch, and git's own text of them (exact bytes)."""
    t = _target(deps, run_id, ended=False)
    files = t.git.numstat(t.base, t.tip)
    text = t.git.diff(t.base, t.tip, stat=stat)
    shown = text.decode("utf-8", "replace")
    result = DiffResult(
        run_id=t.run.id,
        branch=t.run.branch,
        base=t.base,
        tip=t.tip,
        commits=t.git.commit_count(t.base, t.tip),
        files=files,
        insertions=sum(f.insertions or 0 for f in files),
        deletions=sum(f.deletions or 0 for f in files),
        patch=None if stat else shown,
        stat=shown if stat else None,
    )
    return result, text


def _refuse_unclean(git: ResultsGit, what: str, touched: list[str] | None = None) -> None:
    """A checkout in the middle of something, or with uncommitted changes (to ``touched``, when
    given), is refused before anything is changed."""
    busy = git.operation_in_progress()
    if busy is not None:
        raise InvalidInputError(
            f"the main checkout {git.toplevel} is in the middle of {busy}; nothing was {what}",
            hint="finish it or abort it first",
        )
    dirty = git.dirty_paths()
    if touched is not None:
        dirty = [p for p in dirty if p in set(touched)]
    if dirty:
        which = "files the run changes have" if touched is not None else "it has"
        raise InvalidInputError(
            f"the main checkout {git.toplevel} is not clean: {which} uncommitted changes "
            f"({_shown(dirty)}); nothing was {what}",
            hint="commit or stash them (`git stash`), then run it again",
        )


def merge(deps: ResultsDeps, run_id: str, *, into: str | None, mode: MergeMode) -> MergeResult:
    """The run's branch merged into ``into`` (default: the main checkout's branch).

    Where ``into`` is checked out in the main checkout, `git merge` runs there (a conflict is
    aborted). Where it is checked out nowhere, only a fast-forward is possible: the ref moves
    by compare-and-set, no file is touched. A branch checked out in another worktree is refused.
    """
    t = _target(deps, run_id, ended=True)
    git, run = t.git, t.run
    target = into or git.current_branch()
    if target is None:
        raise InvalidInputError(
            f"the main checkout {git.toplevel} is on no branch (detached HEAD)", hint="pass --into BRANCH"
        )
    if target == run.branch:
        raise InvalidInputError(f"cannot merge {run.branch} into itself", hint="pass --into another branch")
    target_tip = git.ref_value(f"refs/heads/{target}")
    if target_tip is None:
        raise NotFoundError(f"no branch {target!r} in {git.toplevel}", hint="`git branch` lists them")

    def result(how: _How, head: str, where: str | None) -> MergeResult:
        return MergeResult(run_id=run.id, branch=run.branch, tip=t.tip, into=target, how=how, head=head, checkout=where)

    if git.is_ancestor(t.tip, target_tip):
        return result("up-to-date", target_tip, None)
    where = git.checked_out().get(target)
    if where is None:
        return result("fast-forward", _fast_forward(git, run, target, t.tip, target_tip, mode), None)
    if Path(where).resolve() != git.toplevel.resolve():
        raise InvalidInputError(
            f"{target} is checked out in the worktree {where}, not in the main checkout {git.toplevel}",
            hint=f"merge there with git (`git -C {where} merge {run.branch}`), or pass --into another branch",
        )
    _refuse_unclean(git, "merged")
    attempt = git.merge(t.tip, mode=mode, message=_message(deps, run, target, mode, t))
    if not attempt.merged:
        after = "the merge was aborted, nothing changed" if attempt.aborted else "the checkout may not be clean"
        if attempt.conflicts:
            raise GitError(
                f"merging {run.branch} into {target} conflicts in {_shown(attempt.conflicts)}; {after}",
                hint=f"resolve it by hand: `git merge {run.branch}` in {git.toplevel}",
            )
        raise GitError(f"git merge of {run.branch} into {target} failed: {attempt.output}; {after}")
    if mode == "squash":
        how: _How = "squash"
    else:
        how = "fast-forward" if attempt.head == t.tip else "merge-commit"
    return result(how, attempt.head, str(git.toplevel))


def _fast_forward(git: ResultsGit, run: RunRecord, target: str, tip: str, old: str, mode: MergeMode) -> str:
    if mode != "ff":
        raise InvalidInputError(
            f"{target} is not checked out: a {mode} merge needs a checkout to make its commit in",
            hint=f"check {target} out in {git.toplevel} and run it again, or leave out --{mode}",
        )
    if not git.is_ancestor(old, tip):
        raise InvalidInputError(
            f"{target} is not checked out and has commits {run.branch} lacks: only a fast-forward can "
            "move a branch without a checkout",
            hint=f"check {target} out in {git.toplevel} and run it again",
        )
    if not git.fast_forward(target, tip, old):
        raise GitError(f"{target} moved (or was checked out) while it was being merged; nothing changed")
    return tip


def _message(deps: ResultsDeps, run: RunRecord, target: str, mode: MergeMode, t: _Target) -> str:
    if mode != "squash":
        return f"Merge {run.branch} (launcher run {run.id}) into {target}"
    try:
        title = deps.store.get_task(run.task_id).title
    except LauncherError:
        title = run.task_id
    commits = run.details.harvest.commits if run.details.harvest else []
    body = "".join(f"* {c.subject}\n" for c in commits)
    return f"{title} (launcher run {run.id})\n\n{body}"


def apply(deps: ResultsDeps, run_id: str) -> ApplyResult:
    """The run's changes into the main checkout as staged, uncommitted changes; all or nothing."""
    t = _target(deps, run_id, ended=True)
    git = t.git
    changed = git.changed_paths(t.base, t.tip)
    made = ApplyResult(run_id=t.run.id, branch=t.run.branch, tip=t.tip, checkout=str(git.toplevel), files=changed)
    if not changed:
        return made
    _refuse_unclean(git, "applied", changed)
    head = git.ref_value("HEAD")
    if head is None:
        raise InvalidInputError(f"the main checkout {git.toplevel} has no commit yet", hint="commit something first")
    conflicts = git.conflicts(t.base, head, t.tip)
    if conflicts is not None:
        raise GitError(
            f"the changes of run {t.run.id} conflict with {git.toplevel}'s HEAD in {_shown(conflicts)}; "
            "nothing was applied",
            hint=f"`launcher checkout {t.run.id}` to look at them, or `git merge {t.run.branch}` to resolve them",
        )
    git.apply(t.base, t.tip)
    return made


def checkout(deps: ResultsDeps, run_id: str, path: Path | None) -> CheckoutResult:
    """A new worktree detached at the run's branch tip, checked out by host git, for a person to look at."""
    t = _target(deps, run_id, ended=True)
    target = (path if path is not None else deps.checkouts_dir / t.run.id).absolute()
    if target.is_symlink() or (target.exists() and (not target.is_dir() or any(target.iterdir()))):
        hint = "name another PATH, or remove it (`git worktree remove PATH` if it is a checkout)"
        raise InvalidInputError(f"{target} already exists", hint=hint)
    t.git.add_checkout(target, t.tip)
    return CheckoutResult(run_id=t.run.id, branch=t.run.branch, tip=t.tip, path=str(target))

"""Harvest: everything a run made, from its bundle into the repository. The bundle is hostile input.

HEAD's commits go onto the run's branch (compare-and-set from its base, without .case/). Every
other branch, tag and stash the run had, and its uncommitted and untracked work (a commit on
HEAD that the entry made), go under ``refs/launcher/runs/<run-id>/``. What cannot be put there
is kept (the bundle in the run's record; the worktree and private git dir too while their
content is nowhere else), the harvest says why and how to recover, and the run ends
``unharvested``: ``launcher import`` finishes the job with the same checks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from launcher.core.ports import RepoPort
from launcher.core.run.container import harvest_spec
from launcher.core.run.deps import RunDeps
from launcher.core.runlayout import RunPaths
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import (
    BundleOverCapError,
    GitError,
    HarvestIncompleteError,
    InvalidInputError,
    LauncherError,
    NotFoundError,
)
from launcher.models import RunRecord
from launcher.models.details import CommitInfo, DiffSummary, HarvestDetails

HARVEST_TIMEOUT_S = 300.0
RUN_REFS = "refs/launcher/runs"
# The run's scope at the top of its worktree: never on its branch.
SCOPE = ".case"
# Each kept ref is a ref in the user's repository: a run cannot add them without bound.
MAX_REFS = 10_000
NO_DIFF = DiffSummary(files_changed=0, insertions=0, deletions=0)
# What a run's bundle may carry (the entry names nothing else) and where it lands.
_WIP, _STASH = "refs/launcher/wip", re.compile(r"refs/launcher/stash/[0-9]{1,6}")


def run_refs(run_id: str) -> str:
    return f"{RUN_REFS}/{run_id}"


@dataclass
class Harvest:
    """A harvest's result: what the record says, and whether the run's work is all in the repository."""

    details: HarvestDetails
    # Every ref of the bundle is in the repository (its branch or the run's refs): the worktree
    # and private git dir hold nothing that is not kept elsewhere.
    captured: bool = True
    complete: bool = True


class HarvestStopped(HarvestIncompleteError):
    """``land`` could not finish; ``harvest`` says what is kept where, and how to recover."""

    def __init__(self, harvest: Harvest) -> None:
        details = harvest.details
        super().__init__(details.error or "the harvest could not complete", hint="; ".join(details.recover) or None)
        self.harvest = harvest


def harvest_commits(deps: RunDeps, repo: RepoPort, run: RunRecord, paths: RunPaths, image: str | None) -> Harvest:
    """Take what the run made from its bundle; never raises for what the run did (it is reported)."""
    base = run.details.base_sha or ""
    ws = deps.workspace
    # The entry writes its word on the capture last; none means it never finished (the agent was
    # killed, or stopped): a short container of the run's own layout captures it. Not for a run
    # whose container never existed, which made nothing.
    ran = bool(run.container_id)
    note = _capture_note(deps, paths) if ran else ["ok"]
    if ran and note is None and image:
        _bundle_in_container(deps, repo, run, paths, image)
        note = _capture_note(deps, paths)
    word, left_out = (note[0], note[1:]) if note else (None, [])
    try:
        bundle = ws.keep_bundle(paths, max_bytes=deps.defaults.bundle_max)
    except BundleOverCapError as exc:
        return _incomplete(
            run,
            f"the run's bundle is {exc.size} bytes, over [run] bundle_max ({exc.max_bytes})",
            bundle=exc.kept,
            recover=[f"raise [run] bundle_max in launcher.toml above {exc.size}, then: launcher import {run.id}"],
        )
    except InvalidInputError as exc:
        return _incomplete(run, f"the run's bundle was refused: {exc}", None, [_import_with_bundle(run)])
    if bundle is None:
        if word == "ok":
            return Harvest(HarvestDetails(commits=[], tip=base, diff=NO_DIFF, warnings=left_out))
        why = word or "its entry never said it finished"
        return _incomplete(run, f"the run's work was not bundled: {why}", None, [_import_with_bundle(run)])
    try:
        landed = land(repo, run, bundle, branch=run.branch, expect=base, on_base=True)
    except HarvestStopped as exc:
        return exc.harvest
    details = landed.details.model_copy(update={"warnings": [*landed.details.warnings, *left_out]})
    if word != "ok":
        error = f"some of the run's uncommitted work could not be captured: {word or 'no word from its entry'}"
        return Harvest(details.model_copy(update={"error": error}), captured=False, complete=False)
    return Harvest(details)


def land(repo: RepoPort, run: RunRecord, bundle: Path, *, branch: str, expect: str, on_base: bool) -> Harvest:
    """Put a bundle's refs in the repository: HEAD on ``branch`` (compare-and-set from ``expect``),
    the rest under the run's refs. ``on_base``: HEAD must descend from the run's base.

    Raises ``HarvestStopped`` (with what was kept) when it cannot finish.
    """
    base, ns = run.details.base_sha or "", run_refs(run.id)
    kept = str(bundle)
    try:
        heads = repo.verify_bundle(bundle)
    except GitError as exc:
        raise _stop(run, f"the run's bundle is corrupt: {exc}", kept, [_import_with_bundle(run)]) from exc
    names = [ref for _, ref in heads]
    refused = [ref for ref in names if not _carried(ref)]
    if refused or len(names) > MAX_REFS:
        why = f"it carries refs no run makes: {refused[:5]}" if refused else f"it carries {len(names)} refs"
        raise _stop(run, f"the run's bundle was refused: {why} (at most {MAX_REFS})", kept, [_import_with_bundle(run)])
    specs = [f"+refs/heads/*:{ns}/heads/*", f"+refs/tags/*:{ns}/tags/*", f"+refs/launcher/stash/*:{ns}/stash/*"]
    specs += [f"+HEAD:{ns}/head"] if "HEAD" in names else []
    specs += [f"+{_WIP}:{ns}/wip"] if _WIP in names else []
    try:
        repo.fetch_bundle(bundle, specs)
    except GitError as exc:
        raise _stop(run, f"the run's bundle could not be imported: {exc}", kept, [_import_with_bundle(run)]) from exc
    # From here on everything the bundle carried is in the repository, whatever happens to HEAD.
    refs = repo.refs_under(f"{ns}/")
    head = refs.pop(f"{ns}/head", None)
    wip = f"{ns}/wip" if f"{ns}/wip" in refs else None
    if head is None:
        return Harvest(HarvestDetails(commits=[], tip=expect or base, diff=NO_DIFF, refs=refs, wip=wip, bundle=kept))
    by_hand = [f"launcher import {run.id} --branch NAME  (HEAD is kept at {ns}/head)"]
    if on_base and not repo.is_ancestor(base, head):
        raise _stop(
            run,
            f"the run's HEAD {head[:12]} does not descend from its base {base[:12]}; the branch stays at the base",
            kept,
            by_hand,
            captured=True,
            refs={**refs, f"{ns}/head": head},
            wip=wip,
        )
    tip, rewritten = repo.rewrite_without(base, head, SCOPE)
    target = f"refs/heads/{branch}"
    # Idempotent: a settle repeated after a crash finds the branch already moved.
    if repo.ref_value(target) != tip:
        try:
            repo.update_ref(target, tip, expect)
        except GitError as exc:
            now = repo.ref_value(target)
            where = f"now at {now[:12]}" if now else "gone"
            wanted = expect[:12] if expect.strip("0") else "absent"
            raise _stop(
                run,
                f"branch {branch} was moved by someone else ({where}, not {wanted}); it was left alone",
                kept,
                by_hand,
                captured=True,
                refs={**refs, f"{ns}/head": head},
                wip=wip,
            ) from exc
    repo.delete_ref(f"{ns}/head")
    warnings = []
    if rewritten:
        warnings.append(
            f"{SCOPE}/ was committed in {len(rewritten)} commit(s); the branch holds them without it "
            "(harvest.rewritten maps the ids)"
        )
    return Harvest(
        HarvestDetails(
            commits=[CommitInfo.model_validate(c) for c in repo.commits_between(base, tip)],
            tip=tip,
            diff=DiffSummary.model_validate(repo.diff_summary(base, tip)),
            warnings=warnings,
            refs=refs,
            wip=wip,
            rewritten=rewritten,
            bundle=kept,
        )
    )


def _carried(ref: str) -> bool:
    if ref in {"HEAD", _WIP}:
        return True
    return ref.startswith(("refs/heads/", "refs/tags/")) or _STASH.fullmatch(ref) is not None


def _import_with_bundle(run: RunRecord) -> str:
    return f"launcher import {run.id} --bundle FILE  (a bundle of the run's work, e.g. made from what is kept)"


def _stop(
    run: RunRecord,
    error: str,
    bundle: str,
    recover: list[str],
    *,
    captured: bool = False,
    refs: dict[str, str] | None = None,
    wip: str | None = None,
) -> HarvestStopped:
    return HarvestStopped(_incomplete(run, error, Path(bundle), recover, captured=captured, refs=refs or {}, wip=wip))


def _incomplete(
    run: RunRecord,
    error: str,
    bundle: Path | None,
    recover: list[str],
    *,
    captured: bool = False,
    refs: dict[str, str] | None = None,
    wip: str | None = None,
) -> Harvest:
    base = run.details.base_sha
    details = HarvestDetails(
        commits=[],
        tip=base,
        diff=NO_DIFF,
        error=error,
        bundle=str(bundle) if bundle is not None else None,
        refs=refs or {},
        wip=wip,
        recover=recover,
    )
    return Harvest(details, captured=captured, complete=False)


def _capture_note(deps: RunDeps, paths: RunPaths) -> list[str] | None:
    """The entry's note on its capture, as lines: "ok" (or what it could not keep), then what it
    left out. None: there is none, the entry never finished."""
    try:
        text = deps.workspace.read_capture(paths)
    except LauncherError as exc:
        return [f"its capture note was refused: {exc}"]
    if text is None:
        return None
    return [line[:500] for line in text.splitlines()[:50]] or [""]


def _bundle_in_container(deps: RunDeps, repo: RepoPort, run: RunRecord, paths: RunPaths, image: str) -> None:
    """The agent was killed before its entry captured its work: a short container does it."""
    if run.uid is None:
        return
    sandbox = deps.sandbox
    container_id = sandbox.create(harvest_spec(deps, repo, run, paths, image, run.uid))
    try:
        sandbox.start(container_id)
        if sandbox.wait(container_id, HARVEST_TIMEOUT_S) is None:
            sandbox.kill(container_id)
    finally:
        sandbox.remove(container_id)


def import_bundle(deps: RunDeps, run_id: str, *, bundle: Path | None, branch: str | None) -> RunRecord:
    """`launcher import`: a finished run's kept bundle (or ``bundle``) onto its branch or a new one.

    The same checks as a harvest (a regular single-link file under ``[run] bundle_max``, copied
    where only the host writes, verified, fsck-checked, HEAD on the run's base, compare-and-set).
    ``branch``: a new branch (it must not exist), and HEAD need not descend from the base.
    """
    run = deps.store.get_run(run_id)
    if run.state in LIVE_RUN_STATES:
        raise InvalidInputError(f"run {run.id} is {run.state.value}", hint="import its work once it has ended")
    repo = deps.recorded_repo(run)
    if repo is None:
        raise NotFoundError(f"the repository of run {run.id} ({run.details.repo}) is not on this machine")
    base = run.details.base_sha or ""
    target, expect, on_base = run.branch, base, True
    if branch is not None and branch != run.branch:
        if not repo.check_ref_format(branch):
            raise InvalidInputError(f"git refuses the branch name {branch!r}")
        if repo.ref_value(f"refs/heads/{branch}") is not None:
            raise InvalidInputError(f"branch {branch} already exists", hint="name a new branch")
        target, expect, on_base = branch, "0" * len(base), False
    paths = deps.paths(run)
    try:
        kept = deps.workspace.keep_bundle(paths, max_bytes=deps.defaults.bundle_max, source=bundle)
    except BundleOverCapError as exc:
        exc.message = f"the bundle is {exc.size} bytes, over [run] bundle_max ({exc.max_bytes})"
        exc.hint = f"raise [run] bundle_max in launcher.toml above {exc.size}"
        raise
    if kept is None:
        raise NotFoundError(f"run {run.id} kept no bundle", hint="pass --bundle FILE")
    landed = land(repo, run, kept, branch=target, expect=expect, on_base=on_base).details
    recorded = run.details.harvest.model_dump(mode="json") if run.details.harvest else {}
    merged = {**recorded, **landed.model_dump(mode="json"), "imported": target}
    return deps.store.update_run(run.id, details={"harvest": merged})

"""Harvest: the run's commits, from its bundle, onto its branch; the bundle is hostile input."""

from __future__ import annotations

from launcher.core.ports import RepoPort
from launcher.core.run.container import harvest_spec
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import Ending
from launcher.core.runlayout import RunPaths
from launcher.errors import InvalidInputError
from launcher.models import RunRecord
from launcher.models.details import CommitInfo, DiffSummary, HarvestDetails

BUNDLE_MAX_BYTES = 512 * 1024 * 1024
HARVEST_TIMEOUT_S = 300.0


def harvest_commits(
    deps: RunDeps, repo: RepoPort, run: RunRecord, paths: RunPaths, ending: Ending, image: str | None
) -> HarvestDetails:
    base = run.details.base_sha or ""
    # A harvest container only if the agent's container existed: one that never started
    # made no commits, and a second failing create would only repeat the failure.
    if not paths.bundle.exists() and ending != "exited" and image and run.container_id:
        _bundle_in_container(deps, repo, run, paths, image)
    copied = deps.workspace.copy_bundle_out(paths, max_bytes=BUNDLE_MAX_BYTES)
    if copied is None:
        return HarvestDetails(commits=[], tip=base, diff=DiffSummary(files_changed=0, insertions=0, deletions=0))
    heads = repo.verify_bundle(copied)
    if [ref for _, ref in heads] != ["HEAD"]:
        raise InvalidInputError(f"the run's bundle must carry HEAD only, it carries {[r for _, r in heads]}")
    staging = f"refs/launcher/staging/{run.id}"
    try:
        tip = repo.fetch_bundle_head(copied, staging)
        if not repo.is_ancestor(base, tip):
            raise InvalidInputError(
                f"the run's HEAD {tip[:12]} does not descend from its base {base[:12]}; the branch stays at the base"
            )
        # Idempotent: a settle repeated after a crash finds the branch already moved.
        if repo.ref_value(f"refs/heads/{run.branch}") != tip:
            repo.update_ref(f"refs/heads/{run.branch}", tip, base)
    finally:
        repo.delete_ref(staging)
    diff = DiffSummary.model_validate(repo.diff_summary(base, tip))
    commits = [CommitInfo.model_validate(c) for c in repo.commits_between(base, tip)]
    if any(f.startswith(".case/") for f in diff.files):
        return HarvestDetails(
            commits=commits,
            tip=tip,
            diff=diff,
            warnings=[".case/ files were committed; they belong to the run's scope, not the branch"],
        )
    return HarvestDetails(commits=commits, tip=tip, diff=diff)


def _bundle_in_container(deps: RunDeps, repo: RepoPort, run: RunRecord, paths: RunPaths, image: str) -> None:
    """The agent was killed before it could bundle its commits: a short container does it."""
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

"""Publish: after harvest the host pushes a run's work to a remote, with the host's credentials.

What goes: the run's branch (``refs/heads/<branch>``, when it holds commits beyond its base) and
every ref the harvest kept for the run (its uncommitted work, other branches, tags, stashes),
under the same names as in the host repository: ``refs/launcher/runs/<run-id>/…``. Those are not
branches, so the forge lists one branch per task attempt and keeps the rest out of the way.

Every remote ref is compare-and-set: it must be absent, or where launcher last pushed it (the
sha in ``details.publish``), or the push leaves the remote alone and says so; one push, atomic,
all refs or none. Pushing what is already there is a success that changes nothing. Failures of
the connection (refused, reset, timeouts, 5xx) are retried, bounded; refusals are not.

A failed publish never changes the run's state (the agent's result stands, the branch stays
local): the record says why, ``launcher run`` exits 18, ``launcher push RUN`` tries again.

Fenced: right before the push the claim's token is read back from the coordinator (a run holds
its claim until its publish is done). A run that is ``superseded``, or whose claim a newer one
has taken over since, never pushes its branch (``refs/heads/…``) and never opens or updates a
pull request: its work leaves the box only under its own names, the branch's tip as
``refs/launcher/runs/<run-id>/branch`` beside its kept refs, which are no branch and belong to
this attempt alone. Between that check and the push there is a window (a takeover a moment
after the read is not seen). It is harmless because every name a run pushes is its own attempt's
(``launcher/<task>/<attempt>``, ``refs/launcher/runs/<run-id>/…``: a newer attempt pushes
other names) and each is compare-and-set (absent, or where launcher last put it): nothing of
the newer attempt can be overwritten, and the worst a late push does is show a just-superseded
attempt's branch on the forge beside the newer one, its record saying what it is.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from pydantic import SecretStr
from tenacity import Retrying, retry_if_result, stop_after_attempt, wait_exponential

from launcher.core.ports.publisher import Credential, PublisherPort, PushAttempt, RefUpdate
from launcher.core.ports.repo import RepoPort
from launcher.core.run.claim_lease import fence_of
from launcher.core.run.deps import RunDeps
from launcher.core.transitions import LIVE_RUN_STATES, RunState
from launcher.errors import LauncherError, PublishError
from launcher.models import RunRecord
from launcher.models.details import PublishDetails, PullRequestDetails
from launcher.settings import PublishSettings

# Where a fenced-out run's branch tip goes on the remote: no branch, its own attempt's name.
FENCED_TIP_REF = "refs/launcher/runs/{run_id}/branch"
PUSH_ATTEMPTS = 4
PUSH_BACKOFF_S = 0.5
_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/@]*@")


def push_settings(configured: PublishSettings, *, remote: str | None, pr: bool | None) -> PublishSettings:
    """[publish] with `launcher push`'s options on top: it always pushes."""
    return configured.model_copy(
        update={"push": True, "remote": remote or configured.remote, "pr": configured.pr if pr is None else pr}
    )


def refusal(run: RunRecord) -> str | None:
    """Why ``run`` cannot be published now (None: it can)."""
    if run.state in LIVE_RUN_STATES:
        return f"run {run.id} is still {run.state.value}; it can be published once it has ended"
    harvest = run.details.harvest
    if run.state == RunState.UNHARVESTED or (harvest is not None and harvest.error is not None):
        return (
            f"run {run.id}'s work is not all on its branch ({run.state.value}); "
            f"recover it first (launcher import {run.id}), then: launcher push {run.id}"
        )
    if harvest is None:
        return f"run {run.id} was never harvested: it made nothing to publish"
    return None


def publish_failed(run: RunRecord) -> bool:
    """The run asked to be published (or was pushed by hand) and that failed."""
    return run.details.publish is not None and run.details.publish.error is not None


def publish_problem(run: RunRecord) -> str | None:
    """What to tell a person about a failed publish: why, and how to try again."""
    published = run.details.publish
    if published is None or published.error is None:
        return None
    return f"not published to {published.remote}: {published.error}; the branch {run.branch} is kept locally; " + (
        f"once fixed: launcher push {run.id}"
    )


def publish_settled(
    deps: RunDeps,
    settings: PublishSettings,
    run: RunRecord,
    repo: RepoPort | None,
    environ: Mapping[str, str] | None = None,
) -> RunRecord:
    """Publish a run that has just settled; what goes wrong is recorded, never raised."""
    publisher = deps.publisher
    why = refusal(run)
    if why is None and publisher is None:
        why = "this launcher has no publisher (RunDeps.publisher)"
    if why is None and repo is None:
        why = "its repository is not open"
    if why is not None or publisher is None or repo is None:
        return _record(deps, run, PublishDetails(remote=_shown(settings.remote), error=f"not published: {why}"))
    try:
        return publish_run(deps, run, settings, publisher, repo=repo, environ=environ)
    except LauncherError as exc:
        return _record(deps, run, PublishDetails(remote=_shown(settings.remote), error=str(exc)))


def publish_run(
    deps: RunDeps,
    run: RunRecord,
    settings: PublishSettings,
    publisher: PublisherPort,
    *,
    repo: RepoPort | None = None,
    environ: Mapping[str, str] | None = None,
) -> RunRecord:
    """Push ``run``'s work (and open its pull request), record the result, return the run.

    Raises ``PublishError`` before anything is tried for a run that cannot be published (live,
    unharvested, its repository gone); what the remote or the forge answered is recorded.
    """
    why = refusal(run)
    if why is not None:
        raise PublishError(why)
    repo = repo or deps.recorded_repo(run)
    if repo is None:
        raise PublishError(f"run {run.id}'s repository {run.details.repo} cannot be opened on this machine")
    env = os.environ if environ is None else environ
    remote = settings.remote
    shown = _shown(remote)
    previous = run.details.publish
    try:
        credential = _credential(settings, env, needed=False)
        publisher.resolve_remote(repo, remote)  # a remote the repository does not have fails here, clearly
        updates, branch_ref, tip = plan_updates(run, repo, previous, shown)
        # Read right before the push: see the module's docstring for the window after it.
        fenced = fenced_out(deps, run)
    except LauncherError as exc:
        return _record(deps, run, _failed(previous, shown, str(exc)))
    if fenced is not None:
        updates, branch_ref = fenced_updates(run, updates, branch_ref), None
    kept = {u.remote_ref: u.sha for u in updates if u.remote_ref != branch_ref}
    wip = next((ref for ref in kept if ref.endswith("/wip")), None)
    if not updates:
        note = "nothing to publish: no commits on the branch, nothing kept"
        nothing = PublishDetails.model_validate({"remote": shown, "pushed": False, "note": note})
        return _record(deps, run, _fenced(nothing, run, fenced))
    attempt = push_with_retries(publisher, repo, remote, updates, credential)
    if not attempt.ok:
        return _record(deps, run, _failed(previous, shown, attempt.error or "the push failed", branch_ref))
    done = PublishDetails.model_validate(
        {
            "remote": shown,
            "ref": branch_ref,
            "sha": tip if branch_ref else None,
            "wip_ref": wip,
            "pushed": True,
            **({"refs": kept} if kept else {}),
        }
    )
    if fenced is not None:
        return _record(deps, run, _fenced(done, run, fenced))
    if settings.pr and branch_ref is not None:
        try:
            pull = _pull_request(deps, run, settings, publisher, repo, env, credential)
        except LauncherError as exc:
            return _record(deps, run, done.model_copy(update={"error": f"pushed, but the pull request: {exc}"}))
        done = done.model_copy(update={"pull_request": pull})
    return _record(deps, run, done)


def plan_updates(
    run: RunRecord, repo: RepoPort, previous: PublishDetails | None, shown: str
) -> tuple[list[RefUpdate], str | None, str | None]:
    """The refs to set on the remote, each with the value it must have now; the branch's ref and tip."""
    harvest = run.details.harvest
    base = run.details.base_sha or ""
    local = f"refs/heads/{run.branch}"
    tip = repo.ref_value(local)
    updates: list[RefUpdate] = []
    branch_ref: str | None = None
    if tip is None and harvest is not None and harvest.commits:
        raise PublishError(f"the run's branch {run.branch} is gone from {repo.toplevel}")
    if tip is not None and tip != base:
        branch_ref = local
        # Where launcher last left it on this remote, or absent: anything else is someone else's.
        expect = previous.sha if previous and previous.remote == shown and previous.ref == local else None
        updates.append(RefUpdate(remote_ref=local, sha=tip, expect=expect or ""))
    for ref in sorted(harvest.refs if harvest else {}):
        sha = repo.ref_value(ref)
        if sha is not None:
            # A kept ref never moves: absent or already that sha on the remote are both fine.
            updates.append(RefUpdate(remote_ref=ref, sha=sha, expect=""))
    return updates, branch_ref, tip


def fenced_out(deps: RunDeps, run: RunRecord) -> str | None:
    """Why ``run`` may not publish its branch as its task's (a store read); None: its claim holds."""
    superseded = run.details.superseded
    if run.state is RunState.SUPERSEDED:
        by = f" by claim #{superseded.current}" if superseded is not None else ""
        return f"run {run.id} is superseded{by}: a newer attempt holds task {run.task_id}"
    fence = fence_of(run)
    if fence is None:
        return None  # no claim of its own (--concurrent): not fenced
    task = deps.store.get_task(run.task_id)
    if task.claims == fence:
        return None
    return (
        f"task {run.task_id} is at claim #{task.claims}, newer than this run's #{fence}: "
        "a newer attempt took the task over"
    )


def fenced_updates(run: RunRecord, updates: list[RefUpdate], branch_ref: str | None) -> list[RefUpdate]:
    """A fenced-out run's refs: no branch; its tip under its own run's name, beside its kept refs."""
    kept = [u for u in updates if u.remote_ref != branch_ref]
    tip = next((u for u in updates if u.remote_ref == branch_ref), None) if branch_ref else None
    if tip is not None:
        # Like a kept ref: it never moves, so absent or already that sha are both fine.
        kept.insert(0, RefUpdate(remote_ref=FENCED_TIP_REF.format(run_id=run.id), sha=tip.sha, expect=""))
    return kept


def _fenced(details: PublishDetails, run: RunRecord, why: str | None) -> PublishDetails:
    """A fenced-out run's publish: its branch not pushed, and why. A superseded run expects no
    more (a note); one whose claim moved since it settled is a failed publish (exit 18)."""
    if why is None:
        return details
    what = f"its branch {run.branch} was not pushed and no pull request was opened ({why})"
    if run.state is RunState.SUPERSEDED:
        return details.model_copy(update={"note": what})
    return details.model_copy(update={"error": what})


def push_with_retries(
    publisher: PublisherPort, repo: RepoPort, remote: str, updates: list[RefUpdate], credential: Credential
) -> PushAttempt:
    """One push, tried again while the failure is transient (bounded); the last attempt."""
    retrying = Retrying(
        retry=retry_if_result(lambda attempt: attempt.transient),
        stop=stop_after_attempt(PUSH_ATTEMPTS),
        wait=wait_exponential(multiplier=PUSH_BACKOFF_S, max=10),
        retry_error_callback=lambda state: state.outcome.result() if state.outcome else PushAttempt(error="no push"),
    )
    result: PushAttempt = retrying(publisher.push, repo, remote, updates, credential)
    if result.transient:
        return result.model_copy(update={"error": f"{result.error} (tried {PUSH_ATTEMPTS} times)"})
    return result


def _pull_request(
    deps: RunDeps,
    run: RunRecord,
    settings: PublishSettings,
    publisher: PublisherPort,
    repo: RepoPort,
    env: Mapping[str, str],
    credential: Credential,
) -> PullRequestDetails:
    # Imported here: pull requests are their own part, and most runs open none.
    from launcher.core.pull_request import publish_pull_request, pull_request_content

    token = _credential(settings, env, needed=True).token
    assert token is not None  # _credential(needed=True) raises otherwise
    base_branch = run.details.base_branch or publisher.default_branch(repo, settings.remote, credential)
    if not base_branch:
        raise PublishError("no base branch for the pull request: the run recorded none, the remote names no HEAD")
    diffstat = publisher.diffstat(repo, run.details.base_sha or base_branch, f"refs/heads/{run.branch}")
    task = deps.store.get_task(run.task_id)
    content = pull_request_content(task, run, diffstat, base_branch, task_text=deps.files.read_md(task))
    remote_url = publisher.resolve_remote(repo, settings.remote)
    forge = publisher.open_forge(settings.forge, settings.api_url, remote_url, token.get_secret_value())
    return publish_pull_request(forge, content, draft=settings.draft, forge_name=settings.forge)


def _credential(settings: PublishSettings, env: Mapping[str, str], *, needed: bool) -> Credential:
    """The token [publish] token_env names, from the host's environment; without one, git's own."""
    name = settings.token_env
    if not name:
        if needed:
            raise PublishError(
                "a pull request needs the forge's token: [publish] token_env names no variable",
                hint='set token_env = "GITHUB_TOKEN" (a variable of launcher\'s environment) in launcher.toml',
            )
        return Credential()
    value = env.get(name, "")
    if not value:
        raise PublishError(
            f"[publish] token_env names {name}, which is not set (or empty) in launcher's environment",
            hint=f"export {name}=… where launcher runs (never inside a run), or remove token_env",
        )
    return Credential(token=SecretStr(value), user=settings.token_user)


def _failed(previous: PublishDetails | None, shown: str, error: str, ref: str | None = None) -> PublishDetails:
    # The sha launcher last pushed stays recorded: the next push's lease expects it there.
    kept_sha = previous.sha if previous is not None and previous.remote == shown and previous.sha else None
    return PublishDetails(
        remote=shown, ref=ref or (previous.ref if previous else None), sha=kept_sha, pushed=False, error=error
    )


def _record(deps: RunDeps, run: RunRecord, details: PublishDetails) -> RunRecord:
    return deps.store.update_run(run.id, details={"publish": details.model_dump(mode="json")})


def _shown(remote: str) -> str:
    """The remote as records show it: a name, or its URL without user, password or query."""
    if "://" in remote:
        return _USERINFO.sub(r"\1", remote).partition("?")[0].partition("#")[0]
    # scp-like user@host:path: the user is no secret, but nothing before the host is shown.
    return remote.rpartition("@")[2] if "@" in remote.partition(":")[0] else remote

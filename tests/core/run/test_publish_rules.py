"""Publish's decisions on the fakes: what is pushed where, under which lease, retried or not.

The fake remote applies git's rules for one atomic push with --force-with-lease (an up-to-date
ref is fine whatever the lease said; otherwise the ref must be where the lease expects, or
nothing moves). The real push against a real forge is tests/runs/test_run_push.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fakes import BASE, FakeWorld, commit_bundle

from launcher.core.ports.publisher import Credential, PushAttempt, RefResult, RefUpdate
from launcher.core.run import publish as publish_step
from launcher.core.run.publish import publish_failed, publish_problem, publish_run, push_settings
from launcher.core.transitions import RunState
from launcher.errors import InvalidInputError, PublishError
from launcher.settings import PublishSettings

TIP = "d" * 40
OTHER = "e" * 40


@dataclass
class FakePublisher:
    remote: dict[str, str] = field(default_factory=dict)
    remotes: dict[str, str] = field(default_factory=lambda: {"origin": "https://u:secret@forge.example/t/demo.git"})
    answers: list[PushAttempt] = field(default_factory=list)  # canned answers first, then the rules
    pushes: list[tuple[list[RefUpdate], Credential]] = field(default_factory=list)
    forges: list[tuple[str, str, str]] = field(default_factory=list)

    def resolve_remote(self, repo: Any, remote: str) -> str:
        if remote not in self.remotes:
            raise PublishError(f"no remote named {remote!r}")
        return self.remotes[remote]

    def push(self, repo: Any, remote: str, updates: list[RefUpdate], credential: Credential) -> PushAttempt:
        self.pushes.append((updates, credential))
        if self.answers:
            return self.answers.pop(0)
        results = []
        for u in updates:
            now = self.remote.get(u.remote_ref)
            if now == u.sha:
                results.append(RefResult(remote_ref=u.remote_ref, status="up-to-date"))
            elif (now or "") != u.expect:
                results.append(RefResult(remote_ref=u.remote_ref, status="lease", reason="stale info"))
            else:
                results.append(RefResult(remote_ref=u.remote_ref, status="new" if now is None else "updated"))
        if any(r.status == "lease" for r in results):
            return PushAttempt(refs=results, error="someone else moved it")
        for u in updates:
            self.remote[u.remote_ref] = u.sha
        return PushAttempt(refs=results)

    def default_branch(self, repo: Any, remote: str, credential: Credential) -> str | None:
        return "main"

    def diffstat(self, repo: Any, base: str, tip: str) -> str:
        return " f.txt | 1 +\n 1 file changed, 1 insertion(+)\n"

    def open_forge(self, kind: str, api_url: str, remote_url: str, token: str) -> Any:
        self.forges.append((kind, api_url, token))
        return FakeForge()


class FakeForge:
    def find_open_pull_request(self, head_branch: str) -> Any:
        return None

    def open_pull_request(self, *, head: str, base: str, title: str, body: str, draft: bool) -> Any:
        from launcher.core.ports.forge import ForgePullRequest

        url = "https://forge.example/pr/7"
        return ForgePullRequest(number=7, url=url, draft=draft, head=head, base=base, state="open")


@pytest.fixture
def publisher(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> FakePublisher:
    made = FakePublisher()
    world.deps.publisher = made  # RunDeps.publisher (see launcher/core/run/publish.py)
    monkeypatch.setattr(publish_step, "PUSH_BACKOFF_S", 0.0)
    return made


def _committing(world: FakeWorld, *heads: str) -> None:
    world.sandbox.agent = lambda _spec, out: (commit_bundle(out, TIP, heads=("HEAD", *heads)), (0, b""))[1]


def test_a_pushed_run_lands_its_branch_and_kept_work_under_new_refs(world: FakeWorld, publisher: FakePublisher) -> None:
    _committing(world, "refs/launcher/wip")
    run = world.run_task(push=True)
    published = run.details.publish
    assert published is not None
    assert published.error is None, published
    assert published.pushed
    assert published.ref == f"refs/heads/{run.branch}"
    assert published.sha == TIP
    wip = f"refs/launcher/runs/{run.id}/wip"
    assert published.wip_ref == wip
    assert publisher.remote == {f"refs/heads/{run.branch}": TIP, wip: TIP}
    updates, credential = publisher.pushes[0]
    assert {u.expect for u in updates} == {""}, "a new run's refs must not exist on the remote yet"
    assert credential.token is None, "no token_env: git's own credential helper"
    assert run.state is RunState.EXITED


def test_a_ref_someone_else_moved_is_refused_recorded_and_the_state_stands(
    world: FakeWorld, publisher: FakePublisher
) -> None:
    _committing(world)
    task = world.new_task()
    branch = f"launcher/{task}/1"
    publisher.remote[f"refs/heads/{branch}"] = OTHER
    run = world.run_task(task, push=True)
    assert run.branch == branch
    assert publish_failed(run)
    published = run.details.publish
    assert published is not None
    assert not published.pushed
    assert published.sha is None
    assert publisher.remote[f"refs/heads/{branch}"] == OTHER, "never overwritten"
    assert world.repo.refs[f"refs/heads/{branch}"] == TIP, "the local branch is kept"
    assert run.state is RunState.EXITED, "the agent's result stands"
    assert f"launcher push {run.id}" in (publish_problem(run) or "")
    assert len(publisher.pushes) == 1, "a refusal is not retried"


def test_a_second_push_expects_what_launcher_pushed_and_is_a_no_op(world: FakeWorld, publisher: FakePublisher) -> None:
    _committing(world)
    run = world.run_task(push=True)
    again = publish_run(world.deps, run, push_settings(PublishSettings(), remote=None, pr=None), publisher)
    assert again.details.publish is not None
    assert again.details.publish.pushed
    assert not publish_failed(again)
    assert publisher.pushes[1][0][0].expect == TIP, "the lease is the sha launcher last pushed"
    assert publisher.remote == {f"refs/heads/{run.branch}": TIP}


def test_after_a_refusal_the_lease_still_expects_launchers_own_push(world: FakeWorld, publisher: FakePublisher) -> None:
    _committing(world)
    run = world.run_task(push=True)
    ref = f"refs/heads/{run.branch}"
    publisher.remote[ref] = OTHER
    settings = push_settings(PublishSettings(), remote=None, pr=None)
    refused = publish_run(world.deps, run, settings, publisher)
    assert publish_failed(refused)
    assert publisher.remote[ref] == OTHER
    assert refused.details.publish is not None
    assert refused.details.publish.sha == TIP
    publisher.remote[ref] = TIP  # someone put it back
    fixed = publish_run(world.deps, refused, settings, publisher)
    assert not publish_failed(fixed)
    assert publisher.pushes[-1][0][0].expect == TIP


def test_transient_failures_are_retried_bounded_and_refusals_are_not(
    world: FakeWorld, publisher: FakePublisher
) -> None:
    _committing(world)
    down = PushAttempt(error="Failed to connect to forge: Connection refused", transient=True)
    publisher.answers = [down, down]
    run = world.run_task(push=True)
    assert not publish_failed(run)
    assert len(publisher.pushes) == 3

    publisher.answers = [down] * (publish_step.PUSH_ATTEMPTS + 2)
    settings = push_settings(PublishSettings(), remote=None, pr=None)
    publisher.pushes.clear()
    gave_up = publish_run(world.deps, world.store.get_run(run.id), settings, publisher)
    assert len(publisher.pushes) == publish_step.PUSH_ATTEMPTS
    assert gave_up.details.publish is not None
    assert f"tried {publish_step.PUSH_ATTEMPTS} times" in (gave_up.details.publish.error or "")

    publisher.answers = [PushAttempt(error="Authentication failed")]
    publisher.pushes.clear()
    refused = publish_run(world.deps, world.store.get_run(run.id), settings, publisher)
    assert len(publisher.pushes) == 1
    assert publish_failed(refused)


def test_the_token_comes_from_the_host_variable_token_env_names(world: FakeWorld, publisher: FakePublisher) -> None:
    _committing(world)
    world.deps.publish = PublishSettings(token_env="FORGE_TOKEN")
    with pytest.raises(InvalidInputError, match="FORGE_TOKEN"):
        world.run_task(push=True)  # refused before the agent runs: an unset variable is no anonymous push
    assert world.store.list_runs() == []
    run = world.run_task()
    settings = push_settings(world.deps.publish, remote=None, pr=None)
    unset = publish_run(world.deps, run, settings, publisher, environ={})
    assert publish_failed(unset), "`launcher push` later, still without the variable: an error"
    assert "FORGE_TOKEN" in (unset.details.publish.error or "")
    assert not publisher.pushes
    settings = push_settings(world.deps.publish, remote=None, pr=None)
    pushed = publish_run(world.deps, run, settings, publisher, environ={"FORGE_TOKEN": "s3cret"})
    assert not publish_failed(pushed)
    token = publisher.pushes[0][1].token
    assert token is not None
    assert token.get_secret_value() == "s3cret"
    assert "s3cret" not in pushed.model_dump_json(), "the token is never recorded"


def test_live_and_unharvested_runs_are_refused_before_anything_is_tried(
    world: FakeWorld, publisher: FakePublisher
) -> None:
    _committing(world)
    done = world.run_task()
    settings = push_settings(PublishSettings(), remote=None, pr=None)
    running = world.store.update_run(done.id, state=RunState.RUNNING)
    with pytest.raises(PublishError, match="still running"):
        publish_run(world.deps, running, settings, publisher)
    unharvested = world.store.update_run(done.id, state=RunState.UNHARVESTED)
    with pytest.raises(PublishError, match="launcher import"):
        publish_run(world.deps, unharvested, settings, publisher)
    assert not publisher.pushes


def test_a_run_that_made_nothing_pushes_nothing(world: FakeWorld, publisher: FakePublisher) -> None:
    world.sandbox.agent = lambda _spec, _out: (0, b"")
    run = world.run_task(push=True)
    assert run.details.publish is not None
    assert not run.details.publish.pushed
    assert not publish_failed(run)
    assert not publisher.pushes
    assert world.repo.refs[f"refs/heads/{run.branch}"] == BASE


def test_recorded_remotes_never_carry_credentials(world: FakeWorld, publisher: FakePublisher) -> None:
    _committing(world)
    url = "https://user:hunter2@forge.example:8443/t/demo.git"
    publisher.remotes[url] = url
    run = world.run_task(push=True, remote=url)
    assert run.details.publish is not None
    assert run.details.publish.remote == "https://forge.example:8443/t/demo.git"
    assert "hunter2" not in run.model_dump_json()


def test_a_pull_request_needs_the_token_and_follows_the_push(world: FakeWorld, publisher: FakePublisher) -> None:
    _committing(world)
    with pytest.raises(InvalidInputError, match="token_env"):
        world.run_task(pr=True)  # refused before the agent runs, not after its work is done
    run = world.run_task()
    later = publish_run(world.deps, run, push_settings(world.deps.publish, remote=None, pr=True), publisher)
    published = later.details.publish
    assert published is not None
    assert published.pushed, "--pr implies the push"
    assert publish_failed(later)
    assert "token_env" in (published.error or "")
    world.deps.publish = PublishSettings(token_env="FORGE_TOKEN", api_url="http://127.0.0.1:1/api")
    settings = push_settings(world.deps.publish, remote=None, pr=True)
    opened = publish_run(world.deps, run, settings, publisher, environ={"FORGE_TOKEN": "tok"})
    assert opened.details.publish is not None
    assert opened.details.publish.pull_request is not None
    assert opened.details.publish.pull_request.number == 7
    assert not publish_failed(opened)
    assert publisher.forges == [("github", "http://127.0.0.1:1/api", "tok")]

"""`--pr`: the host pushes the run's branch, then opens one pull request per task attempt.

Both forges are stand-ins on loopback: the git side is tests/forgekit.py (smart HTTP), the REST
side tests/github_standin.py (GitHub's three pull request endpoints, not GitHub). One token,
in the host's environment, serves both; the run never holds it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from forgekit import Forge
from github_standin import GitHubStandIn
from helpers import git
from runkit import Case

pytestmark = [pytest.mark.docker, pytest.mark.slow]

COMMITS = 'echo "work" > work.txt && git add work.txt && git commit -q -m "Add the work"'
REPO = "octo/demo"


@pytest.fixture
def github(forge: Forge) -> Iterator[GitHubStandIn]:
    with GitHubStandIn(token=forge.token) as standin:
        yield standin


def test_a_run_with_pr_opens_one_pull_request_and_publishing_again_updates_it(
    case: Case, git_repo: Path, forge: Forge, github: GitHubStandIn
) -> None:
    forge.create_repo(REPO)
    git("remote", "add", "origin", forge.url(REPO), cwd=git_repo)
    (case.root / "launcher.toml").write_text(f'[publish]\ntoken_env = "FORGE_TOKEN"\napi_url = "{github.api_url}"\n')
    env = {"FORGE_TOKEN": forge.token}
    task = case.create_task(git_repo, "Open a pull request")

    record = json.loads(case.ok("run", task, "--pr", "--json", "--", "sh", "-c", COMMITS, env=env).stdout)

    assert record["state"] == "exited", record
    published = record["publish"]
    assert published["pushed"] is True, published
    pull = published["pull_request"]
    assert (pull["action"], pull["draft"]) == ("opened", True)
    assert forge.branches(REPO) == {record["branch"]: published["sha"]}
    (opened,) = github.open_pulls(REPO)
    assert opened["head"]["ref"] == record["branch"]
    assert opened["base"]["ref"] == "main"
    assert task in opened["title"]
    assert record["id"] in opened["body"]
    assert "work.txt" in opened["body"], "the diffstat is in the body"
    assert forge.token not in opened["body"]

    again = json.loads(case.ok("push", record["id"], "--pr", "--json", env=env).stdout)

    assert again["publish"]["pull_request"]["action"] == "updated"
    assert again["publish"]["pull_request"]["number"] == pull["number"]
    assert len(github.all_pulls(REPO)) == 1, "a second publish never opens a second pull request"


def test_a_pull_request_without_a_token_is_refused_before_anything_runs(
    case: Case, git_repo: Path, forge: Forge, github: GitHubStandIn
) -> None:
    forge.create_repo(REPO)
    git("remote", "add", "origin", forge.url(REPO), cwd=git_repo)
    (case.root / "launcher.toml").write_text(f'[publish]\napi_url = "{github.api_url}"\n')
    task = case.create_task(git_repo, "No token")

    result = case.cli("run", task, "--pr", "--json", "--", "sh", "-c", COMMITS)

    assert result.exit_code == 6, result.stderr
    assert "token_env" in result.stderr
    assert case.runs() == [], "refused before the agent ran: nothing of its work to lose"
    assert github.all_pulls(REPO) == []
    assert forge.branches(REPO) == {}

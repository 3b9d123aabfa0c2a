"""The GitHub adapter against a stand-in of GitHub's pull request endpoints (tests/github_standin.py).

Everything talks to 127.0.0.1 only; the stand-in is not GitHub, it answers as GitHub documents.
"""

from __future__ import annotations

import time

import pytest
from github_standin import STANDIN_TOKEN, GitHubStandIn, github_standin

from launcher.adapters.forge import open_forge
from launcher.adapters.forge.github import GitHubForge, parse_remote, redact_url
from launcher.core.pull_request import PullRequestContent, publish_pull_request
from launcher.errors import ExitCode, InvalidInputError, PublishError

__all__ = ["github_standin"]

REMOTE = "https://github.com/octo/demo.git"


def forge_for(standin: GitHubStandIn, token: str = STANDIN_TOKEN, remote: str = REMOTE) -> GitHubForge:
    # Retries back off for milliseconds here, not seconds: the waits are the adapter's, the count is real.
    return GitHubForge.for_remote(standin.api_url, remote, token, backoff=0.01, max_wait=2.0)


def content(body: str = "first body", branch: str = "launcher/demo-1-fix/1") -> PullRequestContent:
    return PullRequestContent(title="demo-1-fix: Fix it", body=body, head=branch, base="main")


def test_opens_one_pull_request_and_a_second_publish_updates_it(github_standin: GitHubStandIn) -> None:
    forge = forge_for(github_standin)
    first = publish_pull_request(forge, content("first body"), draft=True)
    assert (first.forge, first.number, first.action, first.draft) == ("github", 1, "opened", True)
    assert first.url == "https://github.standin.invalid/octo/demo/pull/1"

    again = publish_pull_request(forge, content("second body"), draft=True)
    assert (again.number, again.action) == (1, "updated")
    pulls = github_standin.all_pulls()
    assert len(pulls) == 1
    assert (pulls[0]["body"], pulls[0]["head"]["ref"], pulls[0]["base"]["ref"]) == (
        "second body",
        content().head,
        "main",
    )

    # Every request carried GitHub's headers, and the token only as a bearer.
    assert github_standin.seen
    assert all(r.authorized for r in github_standin.seen)
    for request in github_standin.seen:
        assert request.headers["accept"] == "application/vnd.github+json"
        assert request.headers["x-github-api-version"] == "2022-11-28"
    lookups = [r for r in github_standin.seen if r.method == "GET"]
    assert lookups[0].query == {"head": ["octo:launcher/demo-1-fix/1"], "state": ["open"], "per_page": ["100"]}


def test_draft_flag_is_respected_and_another_branch_gets_its_own(github_standin: GitHubStandIn) -> None:
    forge = forge_for(github_standin)
    ready = publish_pull_request(forge, content(branch="launcher/a/1"), draft=False)
    drafted = publish_pull_request(forge, content(branch="launcher/a/2"), draft=True)
    assert (ready.draft, drafted.draft, ready.number, drafted.number) == (False, True, 1, 2)
    assert [p["draft"] for p in github_standin.open_pulls()] == [False, True]


def test_a_closed_pull_request_is_not_reused(github_standin: GitHubStandIn) -> None:
    forge = forge_for(github_standin)
    first = publish_pull_request(forge, content(), draft=True)
    github_standin.close_pull(first.number)
    second = publish_pull_request(forge, content(), draft=True)
    assert (second.number, second.action) == (2, "opened")


def test_a_duplicate_open_is_a_422_the_core_resolves_by_updating(github_standin: GitHubStandIn) -> None:
    forge = forge_for(github_standin)
    forge.open_pull_request(head=content().head, base="main", title="t", body="b", draft=True)
    with pytest.raises(PublishError, match="already exists") as raised:
        forge.open_pull_request(head=content().head, base="main", title="t", body="b", draft=True)
    assert raised.value.exit_code == ExitCode.PUBLISH_FAILED
    assert "publishing again updates it" in str(raised.value)
    assert len(github_standin.open_pulls()) == 1


def test_draft_unsupported_says_to_turn_drafts_off(github_standin: GitHubStandIn) -> None:
    github_standin.draft_supported = False
    with pytest.raises(PublishError, match="draft") as raised:
        publish_pull_request(forge_for(github_standin), content(), draft=True)
    assert "[publish] draft = false" in str(raised.value)


def test_github_enterprise_path_prefix() -> None:
    with GitHubStandIn(prefix="/api/v3", repos={"team/tool"}) as standin:
        assert standin.api_url.endswith("/api/v3")
        forge = GitHubForge.for_remote(standin.api_url + "/", "git@ghe.example.com:team/tool.git", STANDIN_TOKEN)
        made = publish_pull_request(forge, content(), draft=True)
        assert (made.number, made.action) == (1, "opened")
        assert {r.path for r in standin.seen} == {"/api/v3/repos/team/tool/pulls"}
        # Without the prefix the same server has nothing there: the prefix is what made it work.
        bare = GitHubForge(standin.api_url.removesuffix("/api/v3"), "team", "tool", STANDIN_TOKEN)
        with pytest.raises(PublishError, match="404"):
            bare.find_open_pull_request("x")


def test_502s_are_retried_then_it_succeeds(github_standin: GitHubStandIn) -> None:
    github_standin.fail_next(3, 502)
    made = publish_pull_request(forge_for(github_standin), content(), draft=True)
    assert made.action == "opened"
    assert len(github_standin.open_pulls()) == 1
    assert len([r for r in github_standin.seen if r.method == "GET"]) == 4  # 3 failures, then the answer


def test_retries_are_bounded(github_standin: GitHubStandIn) -> None:
    github_standin.fail_next(10, 503)
    forge = GitHubForge.for_remote(github_standin.api_url, REMOTE, STANDIN_TOKEN, attempts=3, backoff=0.01)
    with pytest.raises(PublishError, match=r"HTTP 503.*\(3 attempts\)"):
        forge.find_open_pull_request("b")
    assert len(github_standin.seen) == 3


def test_429_waits_as_retry_after_says(github_standin: GitHubStandIn) -> None:
    github_standin.fail_next(1, 429, {"Retry-After": "1"}, "You have exceeded a secondary rate limit")
    start = time.monotonic()
    assert forge_for(github_standin).find_open_pull_request("b") is None
    assert time.monotonic() - start >= 0.9
    assert len(github_standin.seen) == 2


def test_a_secondary_rate_limit_403_is_retried(github_standin: GitHubStandIn) -> None:
    github_standin.fail_next(2, 403, {"Retry-After": "0"}, "You have exceeded a secondary rate limit.")
    made = publish_pull_request(forge_for(github_standin), content(), draft=True)
    assert made.action == "opened"
    assert len(github_standin.seen) == 4  # two refused lookups, the lookup, the open


def test_a_token_with_a_trailing_newline_works_and_a_blank_one_is_refused(github_standin: GitHubStandIn) -> None:
    assert forge_for(github_standin, token=STANDIN_TOKEN + "\n").find_open_pull_request("b") is None
    with pytest.raises(InvalidInputError, match="token is empty"):
        forge_for(github_standin, token="  \n")
    with pytest.raises(InvalidInputError) as raised:
        forge_for(github_standin, token="two words")
    assert "two words" not in str(raised.value)


def test_a_rate_limit_too_far_off_is_reported_not_waited(github_standin: GitHubStandIn) -> None:
    reset = str(int(time.time()) + 3600)
    github_standin.fail_next(1, 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}, "API rate limit")
    with pytest.raises(PublishError, match="rate limit"):
        forge_for(github_standin).find_open_pull_request("b")
    assert len(github_standin.seen) == 1


def test_a_connection_refused_is_retried_then_reported() -> None:
    with GitHubStandIn() as standin:
        api_url = standin.api_url
    forge = GitHubForge.for_remote(api_url, REMOTE, STANDIN_TOKEN, attempts=2, backoff=0.01)
    with pytest.raises(PublishError, match=r"cannot reach .*\(2 attempts\)"):
        forge.find_open_pull_request("b")


def test_401_is_a_publish_error_without_the_token(github_standin: GitHubStandIn) -> None:
    wrong = "ghp_wrongTOKENvalue987654321"
    forge = forge_for(github_standin, token=wrong)
    with pytest.raises(PublishError) as raised:
        publish_pull_request(forge, content(), draft=True)
    error = raised.value
    assert error.exit_code == ExitCode.PUBLISH_FAILED
    assert "401" in error.message
    assert "token_env" in str(error)
    for text in (str(error), repr(error), repr(forge), str(vars(forge)), str(error.__cause__), str(error.__context__)):
        assert wrong not in text
    assert error.__cause__ is None
    assert error.__context__ is None  # no chained HTTPError carrying the request
    assert len(github_standin.seen) == 1  # a refused token is not retried


def test_404_names_the_repository_and_the_token(github_standin: GitHubStandIn) -> None:
    forge = forge_for(github_standin, remote="https://github.com/octo/missing")
    with pytest.raises(PublishError, match="octo/missing was not found") as raised:
        forge.find_open_pull_request("b")
    assert "token" in raised.value.message
    assert "api/v3" in str(raised.value)


def test_open_forge_picks_github_and_refuses_others(github_standin: GitHubStandIn) -> None:
    forge = open_forge("github", github_standin.api_url, REMOTE, STANDIN_TOKEN)
    assert forge.find_open_pull_request("nothing") is None
    with pytest.raises(InvalidInputError, match="unknown forge"):
        open_forge("gitea", github_standin.api_url, REMOTE, STANDIN_TOKEN)


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("https://github.com/octo/demo.git", ("github.com", "octo", "demo")),
        ("https://github.com/octo/demo", ("github.com", "octo", "demo")),
        ("https://github.com/octo/demo/", ("github.com", "octo", "demo")),
        ("https://x-access-token:SECRET@github.com/octo/demo.git", ("github.com", "octo", "demo")),
        ("git@github.com:octo/demo.git", ("github.com", "octo", "demo")),
        ("github.com:octo/demo", ("github.com", "octo", "demo")),
        ("ssh://git@github.com/octo/demo.git", ("github.com", "octo", "demo")),
        ("ssh://git@ssh.github.com:443/octo/my.repo.git", ("ssh.github.com", "octo", "my.repo")),
        ("https://GHE.Example.com/Team_x/tool-2.git", ("ghe.example.com", "Team_x", "tool-2")),
        ("http://127.0.0.1:8080/octo/demo.git", ("127.0.0.1", "octo", "demo")),
    ],
)
def test_remote_urls_map_to_owner_and_name(remote: str, expected: tuple[str, str, str]) -> None:
    assert parse_remote(remote) == expected


@pytest.mark.parametrize(
    "remote",
    [
        "/srv/git/demo.git",
        "./demo",
        "file:///srv/git/demo.git",
        "https://github.com/octo",
        "https://gitlab.com/group/sub/demo.git",
        "https://github.com/octo/..",
        "https://:SECRET@/octo/demo.git",
        "https://github.com/octo/demo?x=1",
        "",
    ],
)
def test_remote_urls_that_name_no_github_repository(remote: str) -> None:
    with pytest.raises(InvalidInputError, match="cannot tell which GitHub repository") as raised:
        parse_remote(remote)
    assert "SECRET" not in str(raised.value)


def test_a_non_github_host_with_githubs_api_is_refused_with_the_fix() -> None:
    with pytest.raises(InvalidInputError, match=r"git\.corp\.example") as raised:
        GitHubForge.for_remote("https://api.github.com", "https://u:SECRET@git.corp.example/a/b.git", "t")
    assert 'api_url = "https://git.corp.example/api/v3"' in str(raised.value)
    assert "SECRET" not in str(raised.value)


@pytest.mark.parametrize(
    ("api_url", "why"),
    [
        ("http://ghe.example.com/api/v3", "plain http"),
        ("https://user:pw@ghe.example.com/api/v3", "credentials"),
        ("ftp://ghe.example.com", "not an http"),
    ],
)
def test_api_urls_that_would_expose_the_token_are_refused(api_url: str, why: str) -> None:
    with pytest.raises(InvalidInputError, match=why) as raised:
        GitHubForge(api_url, "octo", "demo", "tok")
    assert "pw@" not in str(raised.value)


def test_redact_url_drops_user_info() -> None:
    assert redact_url("https://x:TOKEN@github.com/o/r.git") == "https://***@github.com/o/r.git"
    assert redact_url("git@github.com:o/r.git") == "***@github.com:o/r.git"
    assert redact_url("https://github.com/o/r.git") == "https://github.com/o/r.git"


def test_a_redirect_to_another_origin_is_refused_and_gets_no_token(github_standin: GitHubStandIn) -> None:
    with GitHubStandIn() as elsewhere:
        github_standin.fail_next(1, 307, {"Location": f"{elsewhere.api_url}/repos/octo/demo/pulls"})
        with pytest.raises(PublishError, match="redirected to another host"):
            forge_for(github_standin).find_open_pull_request("b")
        assert elsewhere.seen == []


def test_a_redirect_within_the_api_is_followed(github_standin: GitHubStandIn) -> None:
    moved = f"{github_standin.api_url}/repos/octo/demo/pulls?head=octo:b&state=open"
    github_standin.fail_next(1, 301, {"Location": moved})
    assert forge_for(github_standin).find_open_pull_request("b") is None
    assert [r.authorized for r in github_standin.seen] == [True, True]

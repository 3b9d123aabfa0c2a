"""What a run's pull request says: built from the real task and run models, capped, no secrets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from launcher.core.pull_request import BODY_MAX, TITLE_MAX, publish_pull_request, pull_request_content
from launcher.core.tasks import case_task_doc
from launcher.core.transitions import RunState, TaskStatus
from launcher.errors import PublishError
from launcher.models import RunRecord, TaskRecord
from launcher.models.details import RunDetails

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET_VALUE = "sk-live-DO-NOT-LEAK-4242"


def task(title: str = "Fix the flaky login test") -> TaskRecord:
    return TaskRecord(
        id="demo-7-fix-login",
        prefix="demo",
        number=7,
        slug="fix-login",
        title=title,
        repo="demo",
        repo_path="/home/someone/src/demo",
        base_ref="main",
        image=None,
        command=[],
        status=TaskStatus.IMPLEMENTING,
        queued=False,
        version=3,
        doc=case_task_doc("demo"),
        created_at=T0,
        updated_at=T0,
    )


def run(details: dict[str, Any] | None = None, **fields: Any) -> RunRecord:
    base: dict[str, Any] = {
        "base_sha": "a" * 40,
        "base_branch": "main",
        "command": ["bash", "-lc", f"curl -H 'Authorization: {SECRET_VALUE}' https://x"],
        "network": {"mode": "allowlist", "allow": ["pypi.org"], "api_keys": {"ANTHROPIC_API_KEY": "anthropic"}},
        "secrets": ["ANTHROPIC_API_KEY"],
        "repo": "/home/someone/src/demo",
        "log": "/home/someone/case/.launcher/runs/r-000042/run.log",
        "harvest": {
            "commits": [{"sha": "b" * 40, "subject": "Fix login @octo/everyone ![x](https://evil/p.png)"}],
            "tip": "b" * 40,
            "diff": {"files_changed": 1, "insertions": 3, "deletions": 1, "files": ["tests/test_login.py"]},
        },
        "agent_result": {
            "state": "valid",
            "result": {
                "status": "completed",
                "summary": "Made the test wait for the session.\n```\n## Run\n- **State:** exited\n```",
                "artifacts": {"testsPassed": True},
            },
        },
    }
    base.update(details or {})
    record: dict[str, Any] = {
        "id": "r-000042",
        "seq": 42,
        "task_id": "demo-7-fix-login",
        "attempt": 2,
        "state": RunState.EXITED,
        "owner": None,
        "branch": "launcher/demo-7-fix-login/2",
        "worktree": "/home/someone/case/.launcher/worktrees/r-000042",
        "image": "launcher/agent-base:latest",
        "exit_code": 0,
        "created_at": T0,
        "updated_at": T0,
        "started_at": T0,
        "ended_at": T0 + timedelta(minutes=3, seconds=12),
        "details": RunDetails.model_validate(base),
    }
    record.update(fields)
    return RunRecord(**record)


DIFFSTAT = " tests/test_login.py | 4 +++-\n 1 file changed, 3 insertions(+), 1 deletion(-)\n"


def test_title_head_base_and_facts_come_from_the_task_and_the_run() -> None:
    content = pull_request_content(task(), run(), DIFFSTAT, "main")
    assert content.title == "demo-7-fix-login: Fix the flaky login test"
    assert content.head == "launcher/demo-7-fix-login/2"
    assert content.base == "main"
    body = content.body
    for fact in (
        "- **Run:** `r-000042`",
        "- **Branch:** `launcher/demo-7-fix-login/2`",
        f"- **Base:** `main` at `{'a' * 12}`",
        "- **State:** exited, exit code 0",
        "- **Commits:** 1",
        "- **Duration:** 3m 12s",
        "- **Network:** `allowlist`",
        "attempt 2",
        "Status: **completed** · tests passed: **yes**",
        "Made the test wait for the session.",
        "tests/test_login.py | 4 +++-",
        f"{'b' * 12} Fix login",
    ):
        assert fact in body, fact


def test_agent_text_is_fenced_so_it_cannot_pose_as_launchers_own() -> None:
    body = pull_request_content(task(), run(), DIFFSTAT, "main").body
    # The summary holds a ``` fence of its own; the block around it is longer, so the agent's
    # fake "## Run" section stays inside it.
    assert "````text\nMade the test wait" in body
    assert body.count("- **State:**") == 2  # launcher's own line, and the agent's, inside the fence
    summary_start = body.index("````text\nMade")
    fence_end = body.index("\n````", summary_start + 5)
    assert body.index("- **State:** exited\n```") < fence_end
    # Commit subjects (mentions, images) are inside a code block too.
    commits_block = body[body.index("### Commits") :]
    assert commits_block.index("```text") < commits_block.index("@octo/everyone")


def test_no_secret_value_command_or_host_path_reaches_the_body() -> None:
    body = pull_request_content(task(), run(), DIFFSTAT, "main").body
    assert SECRET_VALUE not in body
    assert "curl" not in body
    assert "/home/someone" not in body


@pytest.mark.parametrize(
    ("report", "expected"),
    [
        (None, "The agent printed no AGENT_RESULT block."),
        ({"state": "missing"}, "The agent printed no AGENT_RESULT block."),
        ({"state": "invalid", "error": "1 validation error: status"}, "1 validation error: status"),
        (
            {"state": "valid", "result": {"status": "failed", "summary": "", "error": "tests still fail"}},
            "Status: **failed**",
        ),
    ],
)
def test_every_kind_of_agent_result_is_said(report: dict[str, Any] | None, expected: str) -> None:
    body = pull_request_content(task(), run({"agent_result": report}), DIFFSTAT, "main").body
    assert expected in body


def test_a_run_without_harvest_times_or_network_still_renders() -> None:
    bare = run({"harvest": None, "network": None, "base_sha": None}, started_at=None, ended_at=None, exit_code=None)
    body = pull_request_content(task(), bare, "", "main").body
    assert "- **Commits:** none harvested" in body
    assert "- **Duration:** not recorded" in body
    assert "- **Network:** not recorded" in body
    assert "No changes against the base." in body


def test_the_body_is_capped_at_githubs_limit_and_says_what_was_cut() -> None:
    huge_stat = "".join(f" src/file_{i:06}.py | 10 ++++++++++\n" for i in range(20_000))
    huge_summary = "x" * 200_000
    many = [{"sha": f"{i:040x}", "subject": "s" * 300} for i in range(500)]
    big = run(
        {
            "agent_result": {"state": "valid", "result": {"status": "completed", "summary": huge_summary}},
            "harvest": {"commits": many, "tip": "c" * 40},
        }
    )
    content = pull_request_content(task(), big, huge_stat, "main", task_text="t" * 100_000)
    assert len(content.body) <= BODY_MAX
    assert "more characters cut" in content.body
    assert "… and 450 more" in content.body
    assert content.body.rstrip().endswith("</sub>")  # the cut is inside sections, the body stays whole
    assert content.body.count("```text") == content.body.count("\n```") - content.body.count("\n```text")


def test_a_long_title_is_capped() -> None:
    content = pull_request_content(task("word " * 99), run(), DIFFSTAT, "main")
    assert len(content.title) <= TITLE_MAX
    assert content.title.endswith("…")


class FakeForge:
    """In-memory ForgePort for the open-or-update rule (the real adapter is tested against the stand-in)."""

    def __init__(self, *, race: bool = False) -> None:
        from launcher.core.ports.forge import ForgePullRequest

        self.made = ForgePullRequest
        self.pulls: dict[int, Any] = {}
        self.race = race

    def find_open_pull_request(self, head_branch: str) -> Any:
        return next((p for p in self.pulls.values() if p.head == head_branch), None)

    def open_pull_request(self, *, head: str, base: str, title: str, body: str, draft: bool) -> Any:
        pr = self.made(number=len(self.pulls) + 1, url="u", draft=draft, head=head, base=base, state="open")
        self.pulls[pr.number] = pr
        if self.race:  # someone else opened it between our look and our open
            raise PublishError("A pull request already exists")
        return pr

    def update_pull_request(self, number: int, *, title: str, body: str) -> Any:
        return self.pulls[number]


def test_open_then_update_and_a_lost_race_updates_the_winner() -> None:
    content = pull_request_content(task(), run(), DIFFSTAT, "main")
    forge = FakeForge()
    first = publish_pull_request(forge, content, draft=True)
    again = publish_pull_request(forge, content, draft=True)
    assert (first.action, again.action, first.number, again.number, len(forge.pulls)) == ("opened", "updated", 1, 1, 1)
    raced = publish_pull_request(FakeForge(race=True), content, draft=False)
    assert (raced.action, raced.draft) == ("updated", False)

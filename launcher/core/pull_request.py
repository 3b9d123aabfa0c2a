"""One pull request per task attempt: what it says, and opening or updating it on a forge.

The body is written from recorded facts only (the task, the run's record, the host's diffstat):
never the run's command, environment, secret values or host paths. What the agent wrote (its
AGENT_RESULT summary, commit subjects, file names) is shown inside fenced code blocks, so it
cannot mention people, embed images or pose as launcher's own text.
"""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from launcher.core.ports.forge import ForgePort, ForgePullRequest
from launcher.errors import PublishError
from launcher.models import RunRecord, TaskRecord
from launcher.models.details import AgentResultReport, PullRequestDetails

# GitHub refuses a body over 65,536 characters, and a title over 256.
BODY_MAX = 65_536
TITLE_MAX = 256
SUMMARY_MAX = 8_000
ERROR_MAX = 2_000
TASK_TEXT_MAX = 16_000
COMMITS_SHOWN = 50
SHA_SHOWN = 12

# Control characters other than tab and newline: a terminal's escapes have no place on a forge.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


class PullRequestContent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    title: str = Field(max_length=TITLE_MAX)
    body: str = Field(max_length=BODY_MAX, description="Markdown")
    head: str = Field(description="the run's branch")
    base: str = Field(description="the branch the pull request merges into")


def pull_request_content(
    task: TaskRecord,
    run: RunRecord,
    diffstat: str,
    base_branch: str,
    *,
    task_text: str | None = None,
) -> PullRequestContent:
    """The pull request for this run of ``task``: a pure function of what is recorded.

    ``task_text`` is the task's own description (its .md), when the caller has it.
    """
    title = _one_line(f"{task.id}: {task.title}")
    if len(title) > TITLE_MAX:
        title = title[: TITLE_MAX - 1] + "…"
    intro = (
        f"<!-- launcher run={_one_line(run.id)} task={_one_line(task.id)} -->\n"
        f"Task {_code(task.id)}, attempt {run.attempt}: the agent's work from launcher run {_code(run.id)}, "
        "published by the host (the run never held the forge's token).\n\n"
    )
    task_part = ""
    if task_text and task_text.strip():
        task_part = "### Task\n" + _clip(_clean(task_text).strip(), TASK_TEXT_MAX) + "\n\n"
    result_part = "### Agent result\n" + _agent_result(run.details.agent_result) + "\n\n"
    facts_part = "### Run\n" + _facts(run, base_branch) + "\n\n"
    commits = _commits(run)
    changes_head = "### Changes\n"
    footer = "\n\n<sub>Opened by launcher; a later publish of this run updates this pull request.</sub>\n"
    fixed = intro + task_part + result_part + facts_part + commits + changes_head
    # The diffstat takes what is left; its fence and the cut note need a little room of their own.
    room = max(0, BODY_MAX - len(fixed) - len(footer) - 200)
    stat = _clean(diffstat).strip("\n")
    changes = _fenced(_clip(stat, room)) if stat else "No changes against the base."
    body = fixed + changes + footer
    if len(body) > BODY_MAX:  # only if the fixed parts alone were huge; never sent over the cap
        note = "\n\n… (cut at GitHub's size limit)\n"
        body = body[: BODY_MAX - len(note)] + note
    return PullRequestContent(title=title, body=body, head=run.branch, base=base_branch)


def publish_pull_request(
    forge: ForgePort, content: PullRequestContent, *, draft: bool, forge_name: str = "github"
) -> PullRequestDetails:
    """Open the branch's pull request, or update the one already open: never a second one."""
    existing = forge.find_open_pull_request(content.head)
    if existing is None:
        try:
            opened = forge.open_pull_request(
                head=content.head, base=content.base, title=content.title, body=content.body, draft=draft
            )
        except PublishError:
            # Opened meanwhile (another publish of this run, or a retried request that had
            # landed): the forge refuses a second one, so update that one instead.
            existing = forge.find_open_pull_request(content.head)
            if existing is None:
                raise
        else:
            return _details(forge_name, opened, "opened")
    updated = forge.update_pull_request(existing.number, title=content.title, body=content.body)
    return _details(forge_name, updated, "updated")


def _details(forge_name: str, pr: ForgePullRequest, action: str) -> PullRequestDetails:
    return PullRequestDetails.model_validate(
        {"forge": forge_name, "number": pr.number, "url": pr.url, "draft": pr.draft, "action": action}
    )


def _agent_result(report: AgentResultReport | None) -> str:
    if report is None or report.state == "missing":
        return "The agent printed no AGENT_RESULT block."
    if report.state == "invalid" or report.result is None:
        why = _clip(_clean(report.error or "unreadable"), ERROR_MAX)
        return "The agent's AGENT_RESULT block could not be read:\n" + _fenced(why)
    result = report.result
    lines = [f"Status: **{result.status}**"]
    if result.artifacts.testsPassed is not None:
        lines[0] += f" · tests passed: **{'yes' if result.artifacts.testsPassed else 'no'}**"
    if result.summary.strip():
        lines.append(_fenced(_clip(_clean(result.summary).strip("\n"), SUMMARY_MAX)))
    if result.error:
        lines += ["Error reported by the agent:", _fenced(_clip(_clean(result.error), ERROR_MAX))]
    return "\n".join(lines)


def _facts(run: RunRecord, base_branch: str) -> str:
    details = run.details
    harvest = details.harvest
    base = _code(base_branch)
    if details.base_sha:
        base += f" at {_code(details.base_sha[:SHA_SHOWN])}"
    state = run.state.value + (f", exit code {run.exit_code}" if run.exit_code is not None else "")
    facts = [
        ("Run", _code(run.id)),
        ("Branch", _code(run.branch)),
        ("Base", base),
        ("State", state),
        ("Commits", str(len(harvest.commits)) if harvest else "none harvested"),
        ("Duration", _duration(run)),
        ("Network", _code(details.network.mode) if details.network and details.network.mode else "not recorded"),
    ]
    if run.image:
        facts.append(("Image", _code(run.image)))
    if harvest and harvest.tip:
        facts.append(("Tip", _code(harvest.tip[:SHA_SHOWN])))
    if harvest and harvest.wip:
        facts.append(("Uncommitted work", f"kept by the host on {_code(harvest.wip)} (not in this pull request)"))
    return "\n".join(f"- **{name}:** {value}" for name, value in facts)


def _commits(run: RunRecord) -> str:
    harvest = run.details.harvest
    if harvest is None or not harvest.commits:
        return ""
    shown = harvest.commits[:COMMITS_SHOWN]
    lines = [f"{c.sha[:SHA_SHOWN]} {_one_line(c.subject)[:200]}" for c in shown]
    if len(harvest.commits) > len(shown):
        lines.append(f"… and {len(harvest.commits) - len(shown)} more")
    return "### Commits\n" + _fenced("\n".join(lines)) + "\n\n"


def _duration(run: RunRecord) -> str:
    if run.started_at is None or run.ended_at is None:
        return "not recorded"
    seconds = max(0, int((run.ended_at - run.started_at) / timedelta(seconds=1)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


def _clean(text: str) -> str:
    return _CONTROL.sub("", text.replace("\r\n", "\n"))


def _one_line(text: str) -> str:
    return " ".join(_clean(text).split())


def _clip(text: str, limit: int) -> str:
    """At most ``limit`` characters, cut at a line end where there is one, saying how much was cut."""
    if len(text) <= limit:
        return text
    note = f"\n… ({len(text) - limit:,}+ more characters cut)"
    keep = text[: max(0, limit - len(note))]
    if "\n" in keep:
        keep = keep[: keep.rindex("\n")]
    return keep + note


def _fenced(text: str) -> str:
    """A code block no line of ``text`` can close: its fence is longer than any backtick run in it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _code(text: str) -> str:
    """An inline code span that holds ``text`` whatever backticks it has."""
    text = _one_line(text)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"

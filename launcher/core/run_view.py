"""What `launcher ps` shows about a run beyond its record: computed columns, filters, templates.

Pure: a run record (and the time now) in, strings out. The JSON of `ps --json` stays the
record's RunView; these columns are for people and for `--format`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from launcher.core.transitions import LIVE_RUN_STATES
from launcher.core.user_labels import label_matches, labels_text
from launcher.models import RunRecord


def duration_text(seconds: float) -> str:
    """3s, 4m12s, 1h02m: as long as it needs to be, never a fraction."""
    total = max(0, int(seconds))
    if total < 60:
        return f"{total}s"
    minutes, secs = divmod(total, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def duration_seconds(run: RunRecord, now: datetime) -> float:
    """Created to ended; a run that has not ended counts to ``now``."""
    end = run.ended_at or now
    return (end - run.created_at).total_seconds()


def commits(run: RunRecord) -> int | None:
    harvest = run.details.harvest
    return None if harvest is None else len(harvest.commits)


def result(run: RunRecord) -> str:
    """The agent's AGENT_RESULT status (completed|failed|blocked), `invalid`, or blank."""
    report = run.details.agent_result
    if report is None or report.state == "missing":
        return ""
    if report.state == "invalid" or report.result is None:
        return "invalid"
    return report.result.status


def denied(run: RunRecord) -> int | None:
    """How many requests the egress proxy refused; None before the run's network is settled."""
    egress = run.details.egress
    return None if egress is None else egress.denied_decisions


def ports(run: RunRecord) -> dict[str, str]:
    """Each leased port's name and where the host reaches it; nothing once the run has ended."""
    if run.state not in LIVE_RUN_STATES:
        return {}
    return {p.name: p.url for p in run.details.ports or [] if p.name and p.url}


def ports_text(run: RunRecord) -> str:
    return " ".join(f"{name}→{url}" for name, url in ports(run).items())


def pushed(run: RunRecord) -> str:
    """`yes`, `yes+PR#12`, `FAILED` (see `run --json` for why), `-` (nothing to push), or blank."""
    published = run.details.publish
    if published is None:
        return ""
    if published.error is not None:
        return "FAILED"
    if not published.pushed:
        return "-"
    pull = published.pull_request
    return f"yes+PR#{pull.number}" if pull is not None else "yes"


def _blank(value: int | None) -> str:
    return "" if value is None else str(value)


# name -> (text for tables and templates, value for `{{json .}}`)
FIELDS: dict[str, Callable[[RunRecord, datetime], tuple[str, Any]]] = {
    "ID": lambda r, _n: (r.id, r.id),
    "Task": lambda r, _n: (r.task_id, r.task_id),
    "State": lambda r, _n: (r.state.value, r.state.value),
    "Exit": lambda r, _n: (_blank(r.exit_code), r.exit_code),
    "Branch": lambda r, _n: (r.branch, r.branch),
    "Created": lambda r, _n: (r.created_at.strftime("%Y-%m-%d %H:%M:%S"), r.created_at.isoformat()),
    "Ended": lambda r, _n: (
        "" if r.ended_at is None else r.ended_at.strftime("%Y-%m-%d %H:%M:%S"),
        None if r.ended_at is None else r.ended_at.isoformat(),
    ),
    "Duration": lambda r, n: (duration_text(duration_seconds(r, n)), round(duration_seconds(r, n), 3)),
    "Commits": lambda r, _n: (_blank(commits(r)), commits(r)),
    "Result": lambda r, _n: (result(r), result(r) or None),
    "Denied": lambda r, _n: (_blank(denied(r)), denied(r)),
    "Pushed": lambda r, _n: (pushed(r), pushed(r) or None),
    "Repo": lambda r, _n: (r.details.repo or "", r.details.repo),
    "Image": lambda r, _n: (r.image or "", r.image),
    "Attempt": lambda r, _n: (str(r.attempt), r.attempt),
    "Ports": lambda r, _n: (ports_text(r), ports(r) or None),
    "Labels": lambda r, _n: (labels_text(r.details.labels), r.details.labels or {}),
}


def row(run: RunRecord, now: datetime) -> dict[str, str]:
    return {name: text(run, now)[0] for name, text in FIELDS.items()}


def values(run: RunRecord, now: datetime) -> dict[str, Any]:
    return {name: value(run, now)[1] for name, value in FIELDS.items()}


# -- --format ------------------------------------------------------------------------------

_ACTION = re.compile(r"\{\{\s*(.*?)\s*\}\}")
_FIELD = re.compile(r"^(json\s+)?\.([A-Za-z]*)$")


class TemplateError(ValueError):
    """A `--format` template that names no known field (a usage error, not a run's fault)."""


def compile_template(template: str) -> Callable[[RunRecord, datetime], str]:
    """Docker's `{{.Field}}`, `{{json .}}` and `{{json .Field}}`; `\\t` and `\\n` as docker's table
    format reads them. Checked once, before any run is printed, so a typo prints nothing."""
    parts: list[str | tuple[bool, str]] = []
    position = 0
    for match in _ACTION.finditer(template):
        parts.append(template[position : match.start()])
        action = _FIELD.match(match.group(1))
        if action is None or (action.group(2) and action.group(2) not in FIELDS):
            raise TemplateError(f"unknown template action {match.group(0)!r}; fields: {', '.join(FIELDS)}")
        parts.append((bool(action.group(1)), action.group(2)))
        position = match.end()
    parts.append(template[position:])

    def render(run: RunRecord, now: datetime) -> str:
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part.replace("\\t", "\t").replace("\\n", "\n"))
                continue
            as_json, name = part
            if not name:
                out.append(json.dumps(values(run, now)) if as_json else str(row(run, now)))
            elif as_json:
                out.append(json.dumps(FIELDS[name](run, now)[1]))
            else:
                out.append(FIELDS[name](run, now)[0])
        return "".join(out)

    return render


# -- --filter ------------------------------------------------------------------------------

FILTER_KEYS = ("id", "state", "task", "repo", "label")


class FilterError(ValueError):
    """A `--filter` that is not key=value with a known key."""


def parse_filters(given: Iterable[str]) -> dict[str, list[str]]:
    """key=value, repeatable: the same key twice is either value, different keys must all hold;
    `label` is the exception, as in docker: every label filter must hold (label=KEY or label=KEY=VALUE)."""
    filters: dict[str, list[str]] = {}
    for item in given:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or not value:
            raise FilterError(f"filter {item!r} is not key=value; keys: {', '.join(FILTER_KEYS)}")
        if key not in FILTER_KEYS:
            raise FilterError(f"unknown filter key {key!r}; keys: {', '.join(FILTER_KEYS)}")
        filters.setdefault(key, []).append(value)
    return filters


def _repo_matches(run: RunRecord, wanted: str) -> bool:
    repo = run.details.repo
    if not repo:
        return False
    # A repository's name or its path: `repo=demo` as a user says it, or the full path ps --json shows.
    return wanted in (repo, Path(repo).name) or Path(wanted).expanduser().resolve(strict=False) == Path(repo)


def matches(run: RunRecord, filters: Mapping[str, list[str]]) -> bool:
    tests: dict[str, Callable[[str], bool]] = {
        "id": lambda v: run.id.startswith(v),
        "state": lambda v: run.state.value == v,
        "task": lambda v: run.task_id == v or run.task_id.startswith(v),
        "repo": lambda v: _repo_matches(run, v),
        "label": lambda v: label_matches(run.details.labels, v),
    }
    return all(
        (all if key == "label" else any)(tests[key](value) for value in wanted) for key, wanted in filters.items()
    )


# -- the table -----------------------------------------------------------------------------

COLUMNS = (
    "ID",
    "Task",
    "State",
    "Exit",
    "Created",
    "Duration",
    "Commits",
    "Result",
    "Denied",
    "Branch",
    "Pushed",
    "Ports",
    "Last",
)
# Shown only when a run in the table has a value: most runs lease no port.
# "Last" (the run's last output line) is filled in by the caller, which reads the log: it is
# the widest column, so it is the first to go on a narrow terminal.
SPARSE_COLUMNS = frozenset({"Ports", "Last"})
LAST_WIDTH = 80
REQUIRED = frozenset({"ID", "Task", "State"})
HEADERS = {"ID": "RUN"}
TASK_WIDTH = 40
GAP = 2


def fit_columns(rows: list[dict[str, str]], width: int | None) -> list[str]:
    """The table's columns: all of them, or without optional ones until it fits ``width``: first
    those no row has a value in, then the widest."""
    columns = [c for c in COLUMNS if c not in SPARSE_COLUMNS or any(r[c] for r in rows)]

    def column_width(name: str) -> int:
        return max([len(HEADERS.get(name, name))] + [len(r[name]) for r in rows])

    while width is not None:
        total = sum(column_width(c) for c in columns) + GAP * (len(columns) - 1)
        optional = [c for c in columns if c not in REQUIRED]
        if total <= width or not optional:
            break
        columns.remove(max(optional, key=lambda c: (all(not r[c] for r in rows), column_width(c))))
    return columns


def table_rows(
    runs: Iterable[RunRecord], now: datetime, last_line: Callable[[RunRecord], str] | None = None
) -> list[dict[str, str]]:
    rows = []
    for run in runs:
        cells = row(run, now)
        cells["Task"] = cells["Task"][:TASK_WIDTH]
        cells["Last"] = last_line(run)[:LAST_WIDTH] if last_line is not None else ""
        rows.append(cells)
    return rows


def exit_status(run: RunRecord) -> int:
    """The exit status a finished run gives `run` and `wait` (README: exit codes): its state's,
    20 when a service of it never became healthy (the agent never started), 18 when it exited 0
    but its publish failed."""
    from launcher.errors import ExitCode, exit_code_of_run

    status = exit_code_of_run(run.state.value)
    if run.details.service_failure is not None and status == ExitCode.RUN_FAILED:
        return ExitCode.SERVICE_FAILED
    publish = run.details.publish
    if status == ExitCode.OK and publish is not None and publish.error is not None:
        return ExitCode.PUBLISH_FAILED
    return status

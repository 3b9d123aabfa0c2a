"""Judging what a run left behind: markers, the agent's copy of its task file, its result.

Everything here is pure: bytes in (already read safely by an adapter), verdicts out. What
the agent asked for is never trusted; it is checked against case's rules and applied by the
caller as compare-and-set changes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from launcher.core.transitions import CaseEra, TaskStatus, is_legal
from launcher.models.details import AgentResult, AgentResultReport, TaskChangeReport

MARKER_NAMES = ("tested", "reviewed", "manual-tested")
# Fields an agent may change in its copy of the task file, besides status and the evidence flags.
AGENT_WRITABLE = frozenset({"agents", "prUrl", "prNumber", "branch", "pendingRevision", "checkBaseline", "checkTarget"})
READ_ONLY = frozenset({"id", "created", "repo"})
EVIDENCE = {"tested": "tested", "manualTested": "manual-tested"}
AGENT_PHASE_STATUSES = frozenset({"pending", "running", "completed", "failed"})


def parse_marker(data: bytes) -> dict[str, str]:
    """case's markers are `key: value` lines (tested also carries structured lines)."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and len(fields) < 100:
            fields.setdefault(key.strip()[:64], value.strip()[:1000])
    return fields


def judge_task_changes(
    snapshot: dict[str, Any],
    requested: dict[str, Any],
    markers: dict[str, dict[str, str]],
    era: CaseEra = CaseEra.HARNESS,
) -> tuple[dict[str, Any], TaskStatus | None, TaskChangeReport]:
    """Return (accepted field updates, accepted status target, report) for a run's task copy,
    judged by the rules of the task's era of case."""
    report = TaskChangeReport()
    updates: dict[str, Any] = {}
    target: TaskStatus | None = None
    for key in sorted(set(snapshot) | set(requested)):
        before, after = snapshot.get(key), requested.get(key)
        if before == after:
            continue
        if key == "status":
            report.requested_status = str(after)
            target = _judge_status(before, after, report, era)
        elif key in READ_ONLY:
            report.refused.append(f"{key}: read-only field changed from {before!r} to {after!r}")
        elif key in EVIDENCE:
            marker = EVIDENCE[key]
            if after is True and marker not in markers:
                report.refused.append(f"{key}: set to true without the .case/<task>/{marker} marker")
            elif isinstance(after, bool):
                updates[key] = after
            else:
                report.refused.append(f"{key}: not a boolean")
        elif key in AGENT_WRITABLE:
            problem = _field_problem(key, after)
            if problem:
                report.refused.append(f"{key}: {problem}")
            else:
                updates[key] = after
        elif key not in snapshot:
            report.refused.append(f"{key}: new field; case's task schema allows no extra fields")
        else:
            report.refused.append(f"{key}: not a field an agent may change")
    report.applied_fields = sorted(updates)
    return updates, target, report


def _judge_status(before: Any, after: Any, report: TaskChangeReport, era: CaseEra) -> TaskStatus | None:
    try:
        current, wanted = TaskStatus(before), TaskStatus(after)
    except ValueError:
        report.refused.append(f"status: unknown status {after!r}")
        return None
    if not is_legal(current, wanted, era):
        whose = " (today's case, repo-local .case/)" if era is CaseEra.REPO_LOCAL else ""
        report.refused.append(f"status: illegal transition {current.value} -> {wanted.value}{whose}")
        return None
    return wanted


def _field_problem(key: str, value: Any) -> str | None:
    if key == "agents":
        if not isinstance(value, dict):
            return "must be an object"
        for name, phase in value.items():
            if not isinstance(phase, dict):
                return f"agents.{name} must be an object"
            status = phase.get("status")
            if status is not None and status not in AGENT_PHASE_STATUSES:
                return f"agents.{name}.status {status!r} is not one of {sorted(AGENT_PHASE_STATUSES)}"
    if key == "prNumber" and value is not None and not isinstance(value, int):
        return "must be an integer or null"
    if key in {"prUrl", "branch"} and value is not None and not isinstance(value, str):
        return "must be a string or null"
    if len(json.dumps(value)) > 100_000:
        return "too large"
    return None


_RESULT_BLOCK = re.compile(r"<<<AGENT_RESULT\s*(.*?)\s*AGENT_RESULT>>>", re.DOTALL)


def parse_agent_result(log: bytes) -> AgentResultReport:
    """The last AGENT_RESULT block in a run's output counts; missing or invalid is reported."""
    blocks = _RESULT_BLOCK.findall(log.decode("utf-8", "replace"))
    if not blocks:
        return AgentResultReport(state="missing")
    try:
        return AgentResultReport(state="valid", result=AgentResult.model_validate_json(blocks[-1]))
    except ValidationError as exc:
        return AgentResultReport(state="invalid", error=str(exc).splitlines()[0][:500])

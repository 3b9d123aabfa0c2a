"""Parsers of what a run leaves behind, fuzzed: they never crash, never trust, never escalate."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.core.adopt import parse_id
from launcher.core.run.judge import (
    EVIDENCE,
    judge_task_changes,
    parse_agent_result,
    parse_marker,
)
from launcher.core.transitions import TASK_TRANSITIONS, TaskStatus

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
SNAPSHOT = {
    "id": "demo-1-x",
    "status": "active",
    "created": "2026-01-01T00:00:00+00:00",
    "repo": "demo",
    "agents": {},
    "tested": False,
    "manualTested": False,
    "prUrl": None,
}


@given(st.binary(max_size=4096))
def test_marker_parser_accepts_any_bytes_and_caps_what_it_keeps(data: bytes) -> None:
    fields = parse_marker(data)
    assert len(fields) <= 100
    assert all(len(k) <= 64 and len(v) <= 1000 for k, v in fields.items())


@given(st.binary(max_size=8192))
def test_agent_result_parser_never_raises(data: bytes) -> None:
    report = parse_agent_result(data)
    assert report.state in {"valid", "missing", "invalid"}
    assert (report.result is not None) == (report.state == "valid")


@given(st.text(max_size=200), st.text(max_size=200))
def test_only_the_last_result_block_counts(noise: str, summary: str) -> None:
    first = json.dumps({"status": "failed", "summary": "old"})
    last = json.dumps({"status": "completed", "summary": summary})
    log = f"{noise}<<<AGENT_RESULT\n{first}\nAGENT_RESULT>>>\n{noise}<<<AGENT_RESULT\n{last}\nAGENT_RESULT>>>\n"
    if "AGENT_RESULT" in noise:
        return
    report = parse_agent_result(log.encode())
    assert report.state == "valid"
    assert report.result is not None
    assert report.result.summary == summary


def test_invalid_result_block_is_reported_not_raised() -> None:
    report = parse_agent_result(b'<<<AGENT_RESULT\n{"status": "done"}\nAGENT_RESULT>>>')
    assert report.state == "invalid"
    assert report.error


@settings(max_examples=300)
@given(
    st.dictionaries(st.text(max_size=12), JSON_VALUES, max_size=8),
    st.sets(st.sampled_from(["tested", "reviewed", "manual-tested"])),
)
@pytest.mark.slow
def test_task_copy_judge_never_accepts_forbidden_changes(extra: dict[str, Any], present: set[str]) -> None:
    requested = {**SNAPSHOT, **extra}
    markers = {name: {"timestamp": "x"} for name in present}
    updates, target, report = judge_task_changes(SNAPSHOT, requested, markers)
    assert not {"id", "created", "repo", "status"} & set(updates)
    assert set(updates) <= {
        "agents",
        "prUrl",
        "prNumber",
        "branch",
        "pendingRevision",
        "checkBaseline",
        "checkTarget",
    } | set(EVIDENCE)
    for field, marker in EVIDENCE.items():
        if updates.get(field) is True:
            assert marker in present
    if target is not None:
        assert target in TASK_TRANSITIONS[TaskStatus.ACTIVE]
    assert set(report.applied_fields) == set(updates)


@given(st.sampled_from(list(TaskStatus)), st.sampled_from(list(TaskStatus)))
def test_status_requests_follow_the_table(current: TaskStatus, wanted: TaskStatus) -> None:
    snapshot = {**SNAPSHOT, "status": current.value}
    _, target, report = judge_task_changes(snapshot, {**snapshot, "status": wanted.value}, {})
    if wanted == current:
        assert target is None
        assert report.requested_status is None
    elif wanted in TASK_TRANSITIONS[current]:
        assert target == wanted
    else:
        assert target is None
        assert any("illegal transition" in r for r in report.refused)


@given(st.text(max_size=120))
def test_task_id_parser_yields_only_safe_parts(text: str) -> None:
    parsed = parse_id(text)
    if parsed is None:
        return
    prefix, number, slug = parsed
    assert number >= 1
    assert "/" not in prefix + slug
    assert ".." not in prefix + slug
    assert set(prefix + slug) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")

"""The coordinator's rules, without a database: formats, short refs, CAS checks, the details merge."""

from __future__ import annotations

import pytest

from launcher.core import coordination as c
from launcher.core.transitions import RunState, TaskStatus
from launcher.errors import IllegalTransitionError, InvalidInputError, TransitionConflictError

S = TaskStatus


def test_formats() -> None:
    assert c.make_task_id("my-repo", 12, "fix-it") == "my-repo-12-fix-it"
    assert c.run_id("my-repo", 12, 3) == "my-repo-12.3"
    assert c.run_branch("my-repo-12-fix-it", 3) == "launcher/my-repo-12-fix-it/3"


@pytest.mark.parametrize(
    ("ref", "parsed"),
    [
        ("demo-1", ("demo", 1)),
        ("my-repo-12", ("my-repo", 12)),
        ("demo-01", ("demo", 1)),
        ("demo-" + "9" * 13, ("demo", int("9" * 13))),
        ("demo-" + "9" * 18, ("demo", 10**18 - 1)),
        ("demo-" + "1" * 19, None),
        ("demo-\u00b2", None),
        ("demo-\u0661", None),
        ("demo-+1", None),
        ("demo-", None),
        ("-1", None),
        ("demo", None),
        ("", None),
        ("demo-1-slug", None),
    ],
)
def test_parse_short_ref(ref: str, parsed: tuple[str, int] | None) -> None:
    assert c.parse_short_ref(ref) == parsed


def test_the_short_ref_bound_fits_a_64_bit_integer() -> None:
    assert 10**c.SHORT_REF_MAX_DIGITS - 1 < 2**63 - 1


def test_new_task_doc_puts_the_id_first_and_normalises_the_status() -> None:
    doc, status = c.new_task_doc("demo-1-x", {"zeta": 1, "id": "ignored", "status": "implementing"})
    assert list(doc) == ["id", "zeta", "status"]
    assert (doc["id"], status) == ("demo-1-x", S.IMPLEMENTING)
    doc, status = c.new_task_doc("demo-2-y", {})
    assert (doc, status) == ({"id": "demo-2-y", "status": "active"}, S.ACTIVE)
    with pytest.raises(ValueError, match="nope"):
        c.new_task_doc("demo-3-z", {"status": "nope"})


def test_check_transition_is_a_compare_and_set_then_the_legal_table() -> None:
    c.check_transition("demo-1-x", S.ACTIVE, S.ACTIVE, S.IMPLEMENTING)
    with pytest.raises(TransitionConflictError) as conflict:
        c.check_transition("demo-1-x", S.IMPLEMENTING, S.ACTIVE, S.IMPLEMENTING)
    assert conflict.value.message == "task demo-1-x is implementing, not active: someone else changed it first"
    assert (conflict.value.actual, conflict.value.expected) == ("implementing", "active")
    with pytest.raises(IllegalTransitionError):
        c.check_transition("demo-1-x", S.ACTIVE, S.ACTIVE, S.MERGED)
    assert c.transitioned_doc({"id": "demo-1-x", "status": "active", "a": 1}, S.IMPLEMENTING) == {
        "id": "demo-1-x",
        "status": "implementing",
        "a": 1,
    }


def test_document_checks() -> None:
    c.check_task_version("demo-1-x", 3, 3)
    with pytest.raises(TransitionConflictError) as stale:
        c.check_task_version("demo-1-x", 3, 2)
    assert stale.value.message == "task demo-1-x changed since version 2 (now 3)"
    assert (stale.value.actual, stale.value.expected) == ("3", "2")
    c.check_doc_update("demo-1-x", S.ACTIVE, {"id": "demo-1-x", "status": "active", "more": 1})
    for doc in ({"id": "demo-2-y", "status": "active"}, {"id": "demo-1-x", "status": "merged"}, {}):
        with pytest.raises(InvalidInputError, match="may not change its id or status"):
            c.check_doc_update("demo-1-x", S.ACTIVE, doc)


def test_adoption_checks() -> None:
    c.check_adoption("demo-7-x", "/f", 7, known=False, holder=None)
    with pytest.raises(TransitionConflictError, match="task demo-7-x is already known"):
        c.check_adoption("demo-7-x", "/f", 7, known=True, holder="demo-7-y")
    with pytest.raises(InvalidInputError) as clash:
        c.check_adoption("demo-7-x", "/f", 7, known=False, holder="demo-7-y")
    assert clash.value.message == "task file /f (demo-7-x) reuses number 7 of demo-7-y"


def test_run_checks() -> None:
    c.check_run_state("demo-1.1", RunState.RUNNING, None)
    c.check_run_state("demo-1.1", RunState.RUNNING, {RunState.RUNNING})
    with pytest.raises(TransitionConflictError) as conflict:
        c.check_run_state("demo-1.1", RunState.PREPARING, [RunState.RUNNING, RunState.CREATED])
    assert conflict.value.message == "run demo-1.1 is preparing, not created or running"
    assert (conflict.value.actual, conflict.value.expected) == ("preparing", "created|running")
    c.check_run_fields(["details", "exit_code"])
    with pytest.raises(ValueError, match=r"unknown run fields: \['id', 'task_id'\]"):
        c.check_run_fields(["task_id", "details", "id"])


def test_merge_details_replaces_top_level_keys_only() -> None:
    current = {"base": "abc", "harvest": {"commits": 1, "kept": True}}
    merged = c.merge_details(current, {"harvest": {"commits": 2}, "new": None})
    assert merged == {"base": "abc", "harvest": {"commits": 2}, "new": None}
    assert current == {"base": "abc", "harvest": {"commits": 1, "kept": True}}

"""The coordinator's rules, the same for every backend: ID and branch formats, compare-and-set
checks, what a document update may change, how run details merge.

Pure: no I/O, no SQL. A backend reads the current row, asks these functions, and writes what
they return; so a rule changed here changes in every backend at once.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from launcher.core.slugs import make_task_id
from launcher.core.transitions import CaseEra, RunState, TaskStatus, check_legal
from launcher.errors import FencedOutError, InvalidInputError, TransitionConflictError

# A short ref's number is looked up as an integer: at most 18 digits always fits the 64-bit
# integer both backends store, so a longer one is simply not found (never an overflow).
SHORT_REF_MAX_DIGITS = 18

# What ``update_run`` may change besides the state; everything else is the coordinator's.
RUN_FIELDS = frozenset(
    {
        "owner",
        "branch",
        "worktree",
        "image",
        "container_id",
        "exit_code",
        "uid",
        "cancel_requested",
        "started_at",
        "ended_at",
        "details",
    }
)

__all__ = [
    "RUN_FIELDS",
    "SHORT_REF_MAX_DIGITS",
    "adopted_status",
    "check_adoption",
    "check_doc_update",
    "check_fence",
    "check_run_fields",
    "check_run_state",
    "check_task_version",
    "check_transition",
    "make_task_id",
    "merge_details",
    "new_task_doc",
    "parse_short_ref",
    "run_branch",
    "run_id",
    "transitioned_doc",
]


def run_id(prefix: str, number: int, attempt: int) -> str:
    """``<prefix>-<number>.<attempt>``: short, unique, and names the run's worktree folder."""
    return f"{prefix}-{number}.{attempt}"


def run_branch(task_id: str, attempt: int) -> str:
    """``launcher/<task-id>/<attempt>``: one new branch per run, never reused."""
    return f"launcher/{task_id}/{attempt}"


def parse_short_ref(ref: str) -> tuple[str, int] | None:
    """``<prefix>-<N>`` as (prefix, N), or None when ``ref`` cannot be a short ref.

    ASCII digits only: ``"²".isdigit()`` is true, and int() refuses it.
    """
    prefix, _, number = ref.rpartition("-")
    if prefix and number.isascii() and number.isdigit() and len(number) <= SHORT_REF_MAX_DIGITS:
        return prefix, int(number)
    return None


def new_task_doc(task_id: str, doc: Mapping[str, Any]) -> tuple[dict[str, Any], TaskStatus]:
    """A new task's document: its ID first, the caller's keys in their order, a valid status."""
    stored = {"id": task_id, **{k: v for k, v in doc.items() if k != "id"}}
    status = TaskStatus(stored.get("status", TaskStatus.ACTIVE.value))
    stored["status"] = status.value
    return stored, status


def adopted_status(doc: Mapping[str, Any]) -> TaskStatus:
    return TaskStatus(doc["status"])


def check_adoption(task_id: str, file_path: str, number: int, *, known: bool, holder: str | None) -> None:
    """An adopted task must be new, and its number must not be another task's."""
    if known:
        raise TransitionConflictError(f"task {task_id} is already known", actual="known", expected="new")
    if holder is not None:
        raise InvalidInputError(
            f"task file {file_path} ({task_id}) reuses number {number} of {holder}",
            hint="give one of them a new number; launcher never hands a number out twice",
        )


def check_transition(
    task_id: str, current: TaskStatus, expected: TaskStatus, target: TaskStatus, era: CaseEra = CaseEra.HARNESS
) -> None:
    """Compare-and-set on the task status, then the legal-transition table of the task's era."""
    if current != expected:
        raise TransitionConflictError(
            f"task {task_id} is {current.value}, not {expected.value}: someone else changed it first",
            actual=current.value,
            expected=expected.value,
        )
    check_legal(current, target, era)


def transitioned_doc(doc: Mapping[str, Any], target: TaskStatus) -> dict[str, Any]:
    return {**doc, "status": target.value}


def check_task_version(task_id: str, current: int, expected: int) -> None:
    """Compare-and-set on the task document's version."""
    if current != expected:
        raise TransitionConflictError(
            f"task {task_id} changed since version {expected} (now {current})",
            actual=str(current),
            expected=str(expected),
        )


def check_doc_update(task_id: str, status: TaskStatus, doc: Mapping[str, Any]) -> None:
    """A document update may not change the task's id or status (status moves by transition only)."""
    if doc.get("id") != task_id or doc.get("status") != status.value:
        raise InvalidInputError("a task document update may not change its id or status")


def check_run_fields(changes: Collection[str]) -> None:
    unknown = set(changes) - RUN_FIELDS
    if unknown:
        raise ValueError(f"unknown run fields: {sorted(unknown)}")


def check_run_state(run: str, current: RunState, allowed: Collection[RunState] | None) -> None:
    """Compare-and-set on the run state: when ``allowed`` is given, the run must be in it."""
    if allowed is not None and current not in allowed:
        names = sorted(s.value for s in allowed)
        raise TransitionConflictError(
            f"run {run} is {current.value}, not {' or '.join(names)}",
            actual=current.value,
            expected="|".join(names),
        )


def check_fence(what: str, task_id: str, fence: int | None, claims: int, holder: str | None) -> None:
    """Compare-and-set on a claim's fencing token: the task's ``claims`` must still be ``fence``.

    A claim's token is the task's claim count right after it was taken, and every takeover adds
    one, so a claim that is no longer the newest never becomes it again: whoever catches
    FencedOutError may act on it later knowing it still holds. ``fence=None`` is not fenced (a
    ``--concurrent`` run, which holds no claim). Checked before the caller's other checks: a
    run whose claim is gone is told so, whatever state someone else gave it meanwhile.
    """
    if fence is None or claims == fence:
        return
    held = f", held by {holder}" if holder else ""
    raise FencedOutError(
        f"{what}'s claim #{fence} on task {task_id} was taken over: the task is at claim #{claims}{held}",
        fence=fence,
        current=claims,
        holder=holder,
    )


def merge_details(current: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level keys of ``update`` replace those of ``current``; the others stay.

    Independent steps of a run (plan, network, harvest) each add their part, and none may
    erase another's.
    """
    return {**current, **update}

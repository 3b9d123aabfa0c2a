"""case's task status machines (one per era of case), and launcher's own run state machine.

case changed its table once it moved task state into the target repository, so a task's legal
moves follow the era its file belongs to (``CaseEra``): tasks under the case root follow case's
``scripts/task-status.sh`` (March 2026) plus the ``approving``/``evaluating`` review step that
versions of that layout added; tasks in a repository's ``.case/`` follow ``src/commands/status.ts``
of workos/case at 30b1fa1, verbatim.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from launcher.errors import IllegalTransitionError, InvalidInputError


class TaskStatus(StrEnum):
    ACTIVE = "active"
    IMPLEMENTING = "implementing"
    VERIFYING = "verifying"
    REVIEWING = "reviewing"
    APPROVING = "approving"
    EVALUATING = "evaluating"
    CLOSING = "closing"
    PR_OPENED = "pr-opened"
    MERGED = "merged"


class CaseEra(StrEnum):
    """Which layout of case a task's files follow."""

    # workos/case at 3aa5f23 and the versions like it: tasks/active/ under the case root, shell scripts.
    HARNESS = "harness"
    # workos/case at 30b1fa1: <repo>/.case/tasks/active/, config under CASE_DATA_DIR, the `ca` CLI.
    REPO_LOCAL = "repo-local"


_T = TaskStatus
HARNESS_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    _T.ACTIVE: frozenset({_T.IMPLEMENTING}),
    _T.IMPLEMENTING: frozenset({_T.VERIFYING, _T.ACTIVE}),
    _T.VERIFYING: frozenset({_T.REVIEWING, _T.CLOSING, _T.IMPLEMENTING}),
    _T.REVIEWING: frozenset({_T.CLOSING, _T.VERIFYING, _T.APPROVING, _T.EVALUATING}),
    _T.APPROVING: frozenset({_T.CLOSING, _T.IMPLEMENTING, _T.VERIFYING}),
    _T.EVALUATING: frozenset({_T.CLOSING, _T.IMPLEMENTING, _T.VERIFYING}),
    _T.CLOSING: frozenset({_T.PR_OPENED, _T.VERIFYING}),
    _T.PR_OPENED: frozenset({_T.PR_OPENED, _T.MERGED}),
    _T.MERGED: frozenset(),
}
# status.ts has no `approving`: a task in that status is not of this era (adoption refuses it).
REPO_LOCAL_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    _T.ACTIVE: frozenset({_T.IMPLEMENTING}),
    _T.IMPLEMENTING: frozenset({_T.VERIFYING, _T.ACTIVE}),
    _T.VERIFYING: frozenset({_T.REVIEWING, _T.EVALUATING, _T.CLOSING, _T.IMPLEMENTING}),
    _T.REVIEWING: frozenset({_T.EVALUATING, _T.CLOSING, _T.VERIFYING}),
    _T.EVALUATING: frozenset({_T.CLOSING, _T.IMPLEMENTING, _T.VERIFYING, _T.REVIEWING}),
    _T.CLOSING: frozenset({_T.PR_OPENED, _T.VERIFYING}),
    _T.PR_OPENED: frozenset({_T.PR_OPENED, _T.MERGED}),
    _T.MERGED: frozenset(),
}
TRANSITIONS: Mapping[CaseEra, Mapping[TaskStatus, frozenset[TaskStatus]]] = {
    CaseEra.HARNESS: HARNESS_TRANSITIONS,
    CaseEra.REPO_LOCAL: REPO_LOCAL_TRANSITIONS,
}
# Kept for callers that know no era: the harness table, launcher's behaviour before eras.
TASK_TRANSITIONS = HARNESS_TRANSITIONS


def statuses_of(era: CaseEra) -> frozenset[TaskStatus]:
    return frozenset(TRANSITIONS[era])


def parse_status(value: str) -> TaskStatus:
    try:
        return TaskStatus(value)
    except ValueError:
        known = ", ".join(s.value for s in TaskStatus)
        raise InvalidInputError(f"unknown task status {value!r}; known statuses: {known}") from None


def is_legal(current: TaskStatus, target: TaskStatus, era: CaseEra = CaseEra.HARNESS) -> bool:
    return target in TRANSITIONS[era].get(current, frozenset())


def check_legal(current: TaskStatus, target: TaskStatus, era: CaseEra = CaseEra.HARNESS) -> None:
    if not is_legal(current, target, era):
        table = TRANSITIONS[era]
        if current not in table:
            raise IllegalTransitionError(
                f"status {current.value} is not one of this task's case ({era.value} layout): "
                f"its statuses are {', '.join(s.value for s in table)}",
                current=current.value,
                target=target.value,
            )
        allowed = ", ".join(sorted(s.value for s in table[current])) or "none"
        whose = " of today's case (repo-local .case/)" if era is CaseEra.REPO_LOCAL else ""
        raise IllegalTransitionError(
            f"illegal transition {current.value} -> {target.value}; from {current.value} the legal "
            f"targets{whose} are: {allowed}",
            current=current.value,
            target=target.value,
        )


class RunState(StrEnum):
    CREATED = "created"
    PREPARING = "preparing"
    RUNNING = "running"
    EXITED = "exited"  # the agent exited 0
    FAILED = "failed"  # the agent exited non-zero, or setup failed
    TIMED_OUT = "timed-out"
    CANCELLED = "cancelled"
    LOST = "lost"  # the launcher that owned it died; settled by gc
    # Its work could not all be put on its branch and refs (bundle over the cap, corrupt or
    # refused; HEAD not on its base; the branch moved by someone else): all of it is kept
    # (bundle, refs, worktree) and `launcher import` recovers it. A failure, whatever the agent did.
    UNHARVESTED = "unharvested"
    # Stopped at a bound the host sets for every run (its disk budget, the disk's reserve): the
    # run's work up to then is harvested as for any stop. A failure, not retried.
    EXCEEDED = "exceeded"
    # Its claim was taken over by a newer one before it settled (its box was cut off, paused or
    # just slow past its lease): a newer attempt holds the task. Its work is harvested and kept
    # on its own branch, but it is never the task's result: its task changes are not applied,
    # its branch is not published. A failure, not retried (the newer attempt is the retry).
    SUPERSEDED = "superseded"


TERMINAL_RUN_STATES = frozenset(
    {
        RunState.EXITED,
        RunState.FAILED,
        RunState.TIMED_OUT,
        RunState.CANCELLED,
        RunState.LOST,
        RunState.UNHARVESTED,
        RunState.EXCEEDED,
        RunState.SUPERSEDED,
    }
)
LIVE_RUN_STATES = frozenset({RunState.CREATED, RunState.PREPARING, RunState.RUNNING})
# The only legal move into ``superseded``: from a live state, or from ``lost``, which another box's
# batch may have recorded while this run's own box was cut off; the late settle then replaces
# that verdict with the run's harvest. Never from another ending (someone's verdict stands).
SUPERSEDABLE_RUN_STATES = LIVE_RUN_STATES | {RunState.LOST}

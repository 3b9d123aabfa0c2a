"""What the agent asked of its task (its copy of the task file, its markers) and what it reported.

Read the careful way (the workspace adapter: no symlinks followed, size-capped), judged by
case's rules (``judge``), applied as compare-and-set changes of the coordinator. Only while the
run's claim is the task's newest: each change is also a compare-and-set on the claim's fencing
token, so a run a newer attempt took the task from changes nothing of the task (what it asked
for is reported as ``not_applied``).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from launcher.core.case_layout import CASE_DIR, TASKS_ACTIVE
from launcher.core.coordination import check_fence
from launcher.core.run.case_scope import carry_back
from launcher.core.run.deps import RunDeps
from launcher.core.run.judge import MARKER_NAMES, judge_task_changes, parse_agent_result, parse_marker
from launcher.core.runlayout import RunPaths
from launcher.core.transitions import CaseEra, TaskStatus
from launcher.errors import FencedOutError, LauncherError, TransitionConflictError
from launcher.models import RunRecord
from launcher.models.details import AgentResultReport, TaskChangeReport

MARKER_MAX_BYTES = 256 * 1024
TASK_COPY_MAX_BYTES = 4 * 1024 * 1024
LOG_SCAN_MAX_BYTES = 16 * 1024 * 1024


def apply_task_changes(
    deps: RunDeps, run: RunRecord, paths: RunPaths, *, fence: int | None = None
) -> TaskChangeReport | None:
    """Judge and apply what the run asked of its task; with ``fence`` (its claim's token) only
    while the task is still at that claim. A run of today's case's task also has its ``.case/``
    carried back into the main checkout (``case_scope``)."""
    snapshot = run.details.task_snapshot
    if not isinstance(snapshot, dict):
        return None
    report = _judge_and_apply(deps, run, paths, snapshot, fence)
    if run.details.case_scope is not None:
        carry_back(deps, run, paths, report, fence=fence)
    return report


def _task_copy(deps: RunDeps, run: RunRecord, paths: RunPaths) -> bytes | None:
    scope = run.details.case_scope
    if scope is not None:
        # Today's case: the copy is where `ca` in the run writes it, in the worktree's own .case/.
        return deps.workspace.read_in(
            paths.worktree, [CASE_DIR, *TASKS_ACTIVE, scope.task_file], max_bytes=TASK_COPY_MAX_BYTES
        )
    return deps.workspace.read_in(
        paths.sandbox, ["tasks", "active", f"{run.task_id}.task.json"], max_bytes=TASK_COPY_MAX_BYTES
    )


def _judge_and_apply(
    deps: RunDeps, run: RunRecord, paths: RunPaths, snapshot: dict[str, Any], fence: int | None
) -> TaskChangeReport:
    raw = _task_copy(deps, run, paths)
    if raw is None:
        return TaskChangeReport(refused=["the run's task file copy is missing"])
    try:
        requested = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return TaskChangeReport(refused=[f"the run's task file copy is not valid JSON: {exc}"])
    if not isinstance(requested, dict):
        return TaskChangeReport(refused=["the run's task file copy is not a JSON object"])
    markers = read_markers(deps, run, paths)
    era = CaseEra.REPO_LOCAL if run.details.case_scope is not None else CaseEra.HARNESS
    updates, target, report = judge_task_changes(snapshot, requested, markers, era)
    report.markers = markers
    store, actor = deps.store, f"run:{run.id}"
    current = store.get_task(run.task_id)
    fields_applied = False
    try:
        # Checked first so that nothing is half applied; each change checks it again, atomically.
        check_fence(f"run {run.id}", run.task_id, fence, current.claims, current.lease_owner)
        if updates:
            try:
                store.update_task_doc(
                    run.task_id, current.version, {**current.doc, **updates}, actor=actor, fence=fence
                )
                fields_applied = True
            except FencedOutError:
                raise
            except TransitionConflictError as exc:
                report.refused.append(f"fields not applied: {exc}")
                report.applied_fields = []
        if target is not None:
            try:
                _, transition = store.transition(
                    run.task_id,
                    TaskStatus(snapshot["status"]),
                    target,
                    reason=f"requested by run {run.id}",
                    actor=actor,
                    fence=fence,
                )
                report.applied_status = target.value
                deps.files.record_transition(run.task_id, transition)
            except FencedOutError:
                raise
            except LauncherError as exc:
                report.refused.append(f"status: {exc.message}")
    except FencedOutError as exc:
        # A newer claim holds the task: what the run asked for is not the task's. (Fields that
        # went in just before the takeover, while the claim still held, stay listed as applied.)
        if not fields_applied:
            report.not_applied = sorted(updates)
            report.applied_fields = []
        if target is not None:
            report.not_applied.append(f"status:{target.value}")
        report.refused.append(f"not applied: {exc.message}; this run is superseded")
        if fields_applied:
            deps.files.sync(run.task_id)
        return report
    if updates and target is None:
        deps.files.sync(run.task_id)
    return report


def read_markers(deps: RunDeps, run: RunRecord, paths: RunPaths) -> dict[str, dict[str, str]]:
    found: dict[str, dict[str, str]] = {}
    for name in MARKER_NAMES:
        try:
            raw = deps.workspace.read_in(paths.worktree, [".case", run.task_id, name], max_bytes=MARKER_MAX_BYTES)
        except LauncherError:
            continue
        if raw is not None:
            fields = parse_marker(raw)
            if raw:
                fields.setdefault("sha256", hashlib.sha256(raw).hexdigest())
            found[name] = fields
    return found


def read_agent_result(paths: RunPaths) -> AgentResultReport:
    """The last AGENT_RESULT block of the run's log (its tail: the block comes at the end)."""
    try:
        with open(paths.log, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - LOG_SCAN_MAX_BYTES))
            data = handle.read()
    except OSError:
        return AgentResultReport(state="missing")
    return parse_agent_result(data)

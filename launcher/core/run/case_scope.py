"""A run of a task of today's case (repo-local ``.case/``): its own ``.case/`` and data dir, and
what of them the host carries back into the main checkout afterwards.

case at 30b1fa1 keeps a task's state in ``<repo>/.case/`` and finds the repository through the
``projects.json`` of its data dir, so ``ca`` started in a run would write the main checkout
unless the run has its own of both. Each run gets:

- in its worktree, ``.case/tasks/active/<id>.task.json`` and ``.md`` (its copy of the task),
  ``.case/active`` (its task), and copies of the task's markers, plan, event logs and
  ``run-log.jsonl`` from the main checkout, so ``ca`` sees the task's history;
- ``CASE_DATA_DIR``: a ``config.json`` (the host's, if any, pointing at the view below) and a
  ``projects.json`` naming only the task's repository, at the run's worktree. Nothing else of
  the host's data dir (no credentials file, no agent-versions).

After the run the host, never the container, writes the main checkout: new event logs (new
files only), lines appended to an event log it was given, changed markers and plan, and the
lines the run appended to ``run-log.jsonl`` (appended under a lock of that file). Everything it
read is first kept in the run's record folder, so a superseded run's files are kept too: they
are never carried back, because its task is a newer attempt's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from launcher.core.case_layout import CASE_DIR, EVENT_LOG_RE, EVENTS_DIR, RUN_LOG, TASKS_ACTIVE, era_of_file
from launcher.core.coordination import check_fence
from launcher.core.ports.case_state import CaseStatePort
from launcher.core.run.deps import RunDeps
from launcher.core.run.judge import MARKER_NAMES, parse_marker
from launcher.core.runlayout import CONTAINER_CASE_DATA, CONTAINER_WORKTREE, RunPaths
from launcher.core.transitions import CaseEra
from launcher.errors import FencedOutError, LauncherError
from launcher.models import MountSpec, RunRecord, TaskRecord
from launcher.models.details import CaseScopeDetails, TaskChangeReport

CASE_DATA_FOLDER = "case-data"
NEWLINE = b"\n"
PLAN_FILE = "plan.json"
REPLACED_FILES = (*MARKER_NAMES, PLAN_FILE)
MARKER_MAX_BYTES = 256 * 1024
EVENT_LOG_MAX_BYTES = 16 * 1024 * 1024
RUN_LOG_MAX_BYTES = 16 * 1024 * 1024
CONFIG_MAX_BYTES = 1024 * 1024
# A record folder bound: more event logs than this from one run is not case's doing.
MAX_EVENT_LOGS = 64


def is_repo_local(task: TaskRecord) -> bool:
    return era_of_file(task.file_path) is CaseEra.REPO_LOCAL


def main_case_dir(task: TaskRecord) -> Path:
    """``<repo>/.case`` of the main checkout: where the canonical task file is."""
    assert task.file_path is not None
    return Path(task.file_path).parents[len(TASKS_ACTIVE)]


def _files(deps: RunDeps) -> CaseStatePort:
    if deps.case_state is None:
        raise LauncherError("this launcher was made without access to repo-local .case/ state")
    return deps.case_state


def _read_quiet(files: CaseStatePort, top: Path, parts: list[str], max_bytes: int) -> bytes | None:
    """The main checkout's copy, or None where it cannot be read safely (the run goes without)."""
    try:
        return files.read(top, parts, max_bytes=max_bytes)
    except LauncherError:
        return None


def write_repo_local_scope(
    deps: RunDeps, task: TaskRecord, run: RunRecord, paths: RunPaths, task_json: bytes, task_md: bytes | None
) -> None:
    """The run's own ``.case/`` in its worktree and its own data dir in its sandbox."""
    files = _files(deps)
    case_dir = main_case_dir(task)
    task_file = Path(task.file_path or "").name
    scope = [CASE_DIR]
    wt = paths.worktree
    files.replace(wt, [*scope, *TASKS_ACTIVE, task_file], task_json, owner=None)
    if task_md is not None:
        md_name = task_file.removesuffix(".task.json") + ".md"
        files.replace(wt, [*scope, *TASKS_ACTIVE, md_name], task_md, owner=None)
    files.replace(wt, [*scope, "active"], f"{task.id}\n".encode(), owner=None)
    copied: list[str] = []
    for name in REPLACED_FILES:
        data = _read_quiet(files, case_dir, [task.id, name], MARKER_MAX_BYTES)
        if data is not None:
            files.replace(wt, [*scope, task.id, name], data, owner=None)
            copied.append(f"{task.id}/{name}")
    for name in files.list_files(case_dir, [task.id, EVENTS_DIR])[:MAX_EVENT_LOGS]:
        data = _read_quiet(files, case_dir, [task.id, EVENTS_DIR, name], EVENT_LOG_MAX_BYTES)
        if EVENT_LOG_RE.match(name) and data is not None:
            files.replace(wt, [*scope, task.id, EVENTS_DIR, name], data, owner=None)
            copied.append(f"{task.id}/{EVENTS_DIR}/{name}")
    run_log = _read_quiet(files, case_dir, [RUN_LOG], RUN_LOG_MAX_BYTES)
    if run_log is not None:
        files.replace(wt, [*scope, RUN_LOG], run_log, owner=None)
        copied.append(RUN_LOG)
    write_data_dir(deps, task, paths)
    details = CaseScopeDetails(
        case_dir=str(case_dir),
        task_file=task_file,
        run_log_size=len(run_log or b""),
        run_log_sha256=hashlib.sha256(run_log).hexdigest() if run_log is not None else None,
        copied_in=copied,
    )
    deps.store.update_run(run.id, details={"case_scope": details.model_dump(mode="json")})


def write_data_dir(deps: RunDeps, task: TaskRecord, paths: RunPaths) -> None:
    """config.json and projects.json as ``ca`` in the run must see them: only the run's worktree."""
    files = _files(deps)
    config: dict[str, Any] = {"version": 1}
    if deps.case_data_dir is not None:
        raw = _read_quiet(files, deps.case_data_dir, ["config.json"], CONFIG_MAX_BYTES)
        try:
            parsed = json.loads(raw) if raw is not None else None
        except (ValueError, UnicodeDecodeError):
            parsed = None  # case itself warns and takes its defaults
        if isinstance(parsed, dict):
            config = parsed
    # case reads the data dir's projects.json only beside a config.json, at the path it names.
    config["projects"] = "./projects.json"
    entry = dict(deps.project_entry(task.repo) or {}) if deps.project_entry else {}
    # Absolute: case resolves a relative path against its own package root, not against the file.
    entry.update(name=task.repo, path=CONTAINER_WORKTREE)
    folder = [CASE_DATA_FOLDER]
    files.replace(paths.sandbox, [*folder, "config.json"], _json(config), owner=None)
    files.replace(paths.sandbox, [*folder, "projects.json"], _json({"repos": [entry]}), owner=None)


def _json(value: Any) -> bytes:
    return (json.dumps(value, indent=2) + "\n").encode()


def data_dir_folder(paths: RunPaths) -> Path:
    return paths.sandbox / CASE_DATA_FOLDER


def case_data_mounts(paths: RunPaths) -> list[MountSpec]:
    """The run's data dir, where it has one (runs of today's case's tasks); writable: ``ca`` makes
    folders in it, and nothing in it is ever read back."""
    folder = data_dir_folder(paths)
    if not folder.is_dir():
        return []
    return [MountSpec(target=CONTAINER_CASE_DATA, source=str(folder))]


def carry_back(deps: RunDeps, run: RunRecord, paths: RunPaths, report: TaskChangeReport, *, fence: int | None) -> None:
    """Keep what the run left in its ``.case/``, then (while its claim is the task's newest) write
    what is new into the main checkout. Reported in ``report.carried_back`` / ``not_carried``."""
    scope = run.details.case_scope
    if scope is None:
        return
    files = _files(deps)
    case_dir = Path(scope.case_dir)
    found = _found(files, run, paths, report)
    kept = [CASE_DIR]
    for parts, data in found:
        files.write_new(paths.record, [*kept, *parts], data, owner=None)
    try:
        task = deps.store.get_task(run.task_id)
        check_fence(f"run {run.id}", run.task_id, fence, task.claims, task.lease_owner)
    except FencedOutError:
        if found:
            report.not_carried.append("all of it: this run is superseded (its files are kept with the run)")
        return
    owner = _owner_of(case_dir)
    for parts, data in found:
        where = "/".join(parts)
        try:
            _carry_one(files, case_dir, parts, data, scope, owner, report)
        except LauncherError as exc:
            report.not_carried.append(f"{where}: {exc.message}")


def _found(
    files: CaseStatePort, run: RunRecord, paths: RunPaths, report: TaskChangeReport
) -> list[tuple[list[str], bytes]]:
    """The run's files worth carrying, read the careful way and checked."""
    wt, tid, scope = paths.worktree, run.task_id, [CASE_DIR]
    found: list[tuple[list[str], bytes]] = []

    def take(parts: list[str], max_bytes: int, check: Any) -> None:
        where = "/".join(parts)
        try:
            data = files.read(wt, [*scope, *parts], max_bytes=max_bytes)
        except LauncherError as exc:
            report.not_carried.append(f"{where}: {exc.message}")
            return
        if data is None:
            return
        problem = check(data)
        if problem:
            report.not_carried.append(f"{where}: {problem}")
            return
        found.append((parts, data))

    for name in REPLACED_FILES:
        take([tid, name], MARKER_MAX_BYTES, _json_problem if name == PLAN_FILE else _marker_problem)
    try:
        names = files.list_files(wt, [*scope, tid, EVENTS_DIR])
    except LauncherError as exc:
        report.not_carried.append(f"{tid}/{EVENTS_DIR}: {exc.message}")
        names = []
    for name in names:
        if not EVENT_LOG_RE.match(name):
            report.not_carried.append(f"{tid}/{EVENTS_DIR}/{name}: not a case event log name (run-<id>.jsonl)")
        elif len([p for p, _ in found if EVENTS_DIR in p]) >= MAX_EVENT_LOGS:
            report.not_carried.append(f"{tid}/{EVENTS_DIR}/{name}: more than {MAX_EVENT_LOGS} event logs")
        else:
            take([tid, EVENTS_DIR, name], EVENT_LOG_MAX_BYTES, _jsonl_problem)
    take([RUN_LOG], RUN_LOG_MAX_BYTES, lambda data: None)
    return found


def _carry_one(
    files: CaseStatePort,
    case_dir: Path,
    parts: list[str],
    data: bytes,
    scope: CaseScopeDetails,
    owner: tuple[int, int] | None,
    report: TaskChangeReport,
) -> None:
    where = "/".join(parts)
    if parts == [RUN_LOG]:
        # Others' runs append meanwhile: what this run added is what follows the copy it was given.
        given = data[: scope.run_log_size]
        if scope.run_log_sha256 is not None and hashlib.sha256(given).hexdigest() != scope.run_log_sha256:
            report.not_carried.append(f"{where}: the run rewrote the lines it was given; none carried back")
            return
        added = data[scope.run_log_size :] if scope.run_log_sha256 is not None else data
        if not added:
            return
        problem = _jsonl_problem(added)
        if problem:
            report.not_carried.append(f"{where}: {problem}")
            return
        lines = _ended(added)
        files.append(case_dir, parts, lines, owner=owner)
        report.carried_back.append(f"{where} (+{lines.count(NEWLINE)} lines)")
        return
    current = files.read(case_dir, parts, max_bytes=max(EVENT_LOG_MAX_BYTES, MARKER_MAX_BYTES))
    if current == data:
        return
    if parts[-2:-1] == [EVENTS_DIR]:
        if current is None:
            if files.write_new(case_dir, parts, data, owner=owner):
                report.carried_back.append(where)
            else:
                report.not_carried.append(f"{where}: appeared in the main checkout meanwhile; left as it is")
        elif data.startswith(current):
            # case resumes a run by appending to its event log: only the lines after the given ones.
            files.append(case_dir, parts, _ended(data[len(current) :]), owner=owner)
            report.carried_back.append(f"{where} (appended)")
        else:
            report.not_carried.append(f"{where}: the run rewrote an event log it was given; left as it is")
        return
    files.replace(case_dir, parts, data, owner=owner)
    report.carried_back.append(where)


def _ended(data: bytes) -> bytes:
    return data if data.endswith(b"\n") else data + b"\n"


def _owner_of(case_dir: Path) -> tuple[int, int] | None:
    """Files the host writes in the main checkout are its owner's, as case's own would be."""
    if os.geteuid() != 0:
        return None
    try:
        info = os.stat(case_dir.parent, follow_symlinks=False)
    except OSError:
        return None
    return info.st_uid, info.st_gid


def _marker_problem(data: bytes) -> str | None:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8 text"
    if "\x00" in text:
        return "holds a NUL byte"
    if text.strip() and not parse_marker(data):
        return "not case's `key: value` lines"
    return None


def _json_problem(data: bytes) -> str | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"not valid JSON: {exc}"
    return None if isinstance(value, dict) else "not a JSON object"


def _jsonl_problem(data: bytes) -> str | None:
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return f"line {number} is not JSON"
        if not isinstance(value, dict):
            return f"line {number} is not a JSON object"
    return None

"""Where today's case (workos/case at 30b1fa1) keeps a task's state inside its repository.

``<repo>/.case/``: ``tasks/active/<id>.task.json`` and ``<id>.md``, ``active`` (the current task's
ID), ``<id>/{tested,reviewed,manual-tested}`` markers, ``<id>/events/run-<uuid>.jsonl`` (one event
log per pipeline run) and ``run-log.jsonl`` (one line per run). case names all of them by the
task's full ID (its docs say "slug"). The folder is git-ignored in the repository.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath

from launcher.core.transitions import CaseEra

CASE_DIR = ".case"
TASKS_ACTIVE = ("tasks", "active")
ACTIVE_MARKER = "active"
RUN_LOG = "run-log.jsonl"
EVENTS_DIR = "events"
# case's event logs are run-<crypto.randomUUID()>.jsonl; anything else in events/ is not one.
EVENT_LOG_RE = re.compile(r"^run-[0-9A-Za-z][0-9A-Za-z-]{0,63}\.jsonl$")
# <repo>-<Date.now().toString(36)>-<slug, at most 30>: the stamp is 8 base-36 digits from 1973 to
# 2059 and always holds a letter then, so it can never read as launcher's decimal <N>.
CURRENT_STAMP_RE = re.compile(r"^[0-9a-z]{6,12}$")


def era_of_file(file_path: str | None) -> CaseEra:
    """A task file under ``<repo>/.case/tasks/`` is today's case's; any other is the harness's."""
    if not file_path:
        return CaseEra.HARNESS
    parts = PurePath(file_path).parts
    if len(parts) >= 4 and parts[-4] == CASE_DIR and parts[-3] == "tasks":
        return CaseEra.REPO_LOCAL
    return CaseEra.HARNESS


def parse_current_id(task_id: str, repo: str) -> str | None:
    """The slug of a case-made ID ``<repo>-<base36 ms>-<slug>``; None when it is not one.

    The slug may be empty or end in ``-``: case cuts it at 30 characters after trimming.
    """
    if not task_id.startswith(f"{repo}-"):
        return None
    stamp, sep, slug = task_id[len(repo) + 1 :].partition("-")
    if not sep or not CURRENT_STAMP_RE.match(stamp) or stamp.isdigit():
        return None
    if slug and not re.fullmatch(r"[a-z0-9-]{1,60}", slug):
        return None
    return slug


def new_task_dir(layout: str, repo_path: str | None) -> Path | None:
    """Where a new task's files go under [case].layout; None: tasks/active/ under the case root.

    ``auto`` follows the repository: one whose ``.case/tasks/`` exists is today's case's.
    """
    if layout == CaseEra.HARNESS.value or not repo_path:
        return None
    case_dir = Path(repo_path) / CASE_DIR
    if layout == CaseEra.REPO_LOCAL.value or (case_dir / "tasks").is_dir():
        return case_dir.joinpath(*TASKS_ACTIVE)
    return None

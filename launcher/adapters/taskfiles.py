"""case-compatible task files: ``tasks/active/<id>.task.json`` and ``<id>.md`` beside it.

Files are rendered from the coordinator, under a per-task lock: the writer re-reads the
task from the coordinator after taking the lock, so whichever writer comes last writes
the newest state and the file always ends equal to the coordinator.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from launcher.adapters.locks import file_lock
from launcher.adapters.safe_io import atomic_write
from launcher.errors import InvalidInputError, StateStoreError
from launcher.models import TaskRecord, TransitionRecord, iso, utcnow


def render_task_json(doc: dict[str, Any]) -> bytes:
    # case writes json.dump(data, f, indent=2) plus a newline; match it byte for byte.
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def render_task_md(task: TaskRecord, body: str | None) -> str:
    lines = [f"# {task.title}", "", f"- **Task:** {task.id}", f"- **Repo:** {task.repo}", ""]
    if body:
        lines += [body.rstrip(), ""]
    lines += [
        "## Progress Log",
        "",
        f"### launcher — {iso(task.created_at)}",
        "",
        f"Task created (status {task.status.value}).",
        "",
    ]
    return "\n".join(lines)


def progress_entry(transition: TransitionRecord) -> str:
    reason = f": {transition.reason}" if transition.reason else ""
    source = transition.from_status.value if transition.from_status else "(new)"
    return (
        f"### {transition.actor} — {iso(transition.at)}\n\n"
        f"Status {source} → {transition.to_status.value}{reason}\n\n"
    )


class TaskFiles:
    def __init__(self, tasks_dir: Path, locks_dir: Path) -> None:
        self.active = tasks_dir / "active"
        self.locks_dir = locks_dir

    def json_path(self, task_id: str) -> Path:
        return self._inside(self.active / f"{task_id}.task.json")

    def md_path(self, task_id: str) -> Path:
        return self._inside(self.active / f"{task_id}.md")

    def _inside(self, path: Path) -> Path:
        # IDs are validated upstream; this is the last line of defence against '../'.
        if path.parent != self.active or path.name.startswith(".") or "/" in path.name:
            raise InvalidInputError(f"refusing a task file path outside {self.active}: {path}")
        return path

    def _lock(self, task_id: str) -> Any:
        return file_lock(self.locks_dir / "tasks" / f"{task_id}.lock")

    def ensure_dirs(self) -> None:
        try:
            self.active.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateStoreError(f"cannot create {self.active}: {exc.strerror or exc}") from exc

    def sync(self, task_id: str, load: Callable[[str], TaskRecord]) -> TaskRecord:
        """Write the task's JSON from the coordinator's current state, under the task lock."""
        self.ensure_dirs()
        with self._lock(task_id):
            task = load(task_id)
            atomic_write(self.json_path(task.id), render_task_json(task.doc))
            return task

    def create(self, task: TaskRecord, body: str | None, load: Callable[[str], TaskRecord]) -> None:
        self.ensure_dirs()
        with self._lock(task.id):
            current = load(task.id)
            atomic_write(self.json_path(task.id), render_task_json(current.doc))
            md = self.md_path(task.id)
            if not md.exists():
                atomic_write(md, render_task_md(current, body).encode("utf-8"))

    def record_transition(
        self, task_id: str, transition: TransitionRecord, load: Callable[[str], TaskRecord]
    ) -> None:
        """Re-render the JSON and append the transition to the `.md` Progress Log."""
        self.ensure_dirs()
        with self._lock(task_id):
            current = load(task_id)
            atomic_write(self.json_path(task_id), render_task_json(current.doc))
            md = self.md_path(task_id)
            existing = md.read_text(encoding="utf-8") if md.exists() else f"# {current.title}\n"
            if "## Progress Log" not in existing:
                existing = existing.rstrip("\n") + "\n\n## Progress Log\n\n"
            elif not existing.endswith("\n\n"):
                existing = existing.rstrip("\n") + "\n\n"
            atomic_write(md, (existing + progress_entry(transition)).encode("utf-8"))


def now_iso() -> str:
    return iso(utcnow())

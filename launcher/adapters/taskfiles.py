"""case-compatible task files: ``<id>.task.json`` and ``<id>.md`` beside it.

Files are rendered from the coordinator under a per-task lock: the writer re-reads the task
after taking the lock, so whichever writer comes last writes the newest state and the file
always ends equal to the coordinator. A file whose bytes differ from what launcher last
wrote was edited by hand: it is never overwritten silently (ExternalChangeError), the
caller imports it first.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from launcher.adapters.locks import file_lock
from launcher.adapters.safe_io import OverCapError, atomic_write, read_untrusted
from launcher.core.ports import Coordinator
from launcher.errors import InvalidInputError, LauncherError, StateStoreError
from launcher.models import TaskRecord, TransitionRecord, iso

JSON_SUFFIX = ".task.json"


def _owner_of(folder: Path) -> tuple[int, int] | None:
    """The folder's owner, whom task files written into it belong to (a repository's .case/ is its
    owner's, not root's); None when not root (files are the writer's anyway)."""
    if os.geteuid() != 0:
        return None
    info = folder.stat()
    return info.st_uid, info.st_gid


class ExternalChangeError(StateStoreError):
    code = "changed-outside"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def render_task_json(doc: dict[str, Any]) -> bytes:
    # case writes json.dump(data, f, indent=2) plus a newline; match it byte for byte.
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


# A task's description as a pull request shows it: GitHub's body holds 65,536 characters in all.
MD_READ_MAX = 256 * 1024
# What a run's copy of its task files may hold (the .md is the agent's brief, not a data file).
COPY_READ_MAX = 4 * 1024 * 1024


def render_task_md(task: TaskRecord, body: str | None, template: str | None = None) -> str:
    if template is not None:
        head = template.replace("{{title}}", task.title).replace("{{id}}", task.id).rstrip("\n")
        lines = [head, ""]
    else:
        lines = [f"# {task.title}", "", f"- **Task:** {task.id}", f"- **Repo:** {task.repo}", ""]
    if body:
        lines += [body.rstrip(), ""]
    if "## Progress Log" not in "\n".join(lines):
        lines += ["## Progress Log", ""]
    lines += [f"### launcher — {iso(task.created_at)}", "", f"Task created (status {task.status.value}).", ""]
    return "\n".join(lines)


def progress_entry(transition: TransitionRecord) -> str:
    reason = f": {transition.reason}" if transition.reason else ""
    source = transition.from_status.value if transition.from_status else "(new)"
    return (
        f"### {transition.actor} — {iso(transition.at)}\n\nStatus {source} → {transition.to_status.value}{reason}\n\n"
    )


class TaskFiles:
    def __init__(
        self,
        tasks_dir: Path,
        locks_dir: Path,
        store: Coordinator,
        validate: Callable[[dict[str, Any]], list[str]] | None = None,
        repo_local_dir: Callable[[TaskRecord], Path | None] | None = None,
    ) -> None:
        self.active = tasks_dir / "active"
        self.templates = tasks_dir / "templates"
        self.locks_dir = locks_dir
        self.store = store
        self.validate = validate
        # Where a new task's files go when its repository keeps today's case's .case/tasks/active/
        # ([case].layout); None: under the root, as the harness keeps them.
        self.repo_local_dir = repo_local_dir

    def json_path(self, task: TaskRecord) -> Path:
        if task.file_path:
            return Path(task.file_path)
        active = (self.repo_local_dir(task) if self.repo_local_dir else None) or self.active
        path = active / f"{task.id}{JSON_SUFFIX}"
        # IDs are validated upstream; this is the last line of defence against '../'.
        if path.parent != active or path.name.startswith(".") or "/" in task.id:
            raise InvalidInputError(f"refusing a task file path outside {active}: {path}")
        return path

    def md_path(self, task: TaskRecord) -> Path:
        path = self.json_path(task)
        return path.with_name(path.name.removesuffix(JSON_SUFFIX) + ".md")

    def read_md(self, task: TaskRecord, *, max_bytes: int | None = None, strict: bool = False) -> str | None:
        try:
            data = read_untrusted(self.md_path(task), max_bytes=MD_READ_MAX if max_bytes is None else max_bytes)
        except FileNotFoundError:
            return None
        except (OSError, LauncherError) as exc:
            if not strict:
                return None  # a pull request without the description, not no pull request
            if isinstance(exc, OSError | OverCapError):
                raise
            # The port's promise: what cannot be read is an OSError, whatever refused it (a symlink).
            raise OSError(str(exc)) from exc
        return data.decode("utf-8", errors="replace")

    def read_copies(self, task: TaskRecord) -> tuple[bytes | None, bytes | None]:
        # A repository's own .case/tasks/ is whatever its commits hold: a task file that is a
        # symbolic link (to a host key, say) must not be copied into a run as the task.
        copies: list[bytes | None] = []
        for path in (self.json_path(task), self.md_path(task)):
            try:
                copies.append(read_untrusted(path, max_bytes=COPY_READ_MAX))
            except FileNotFoundError:
                copies.append(None)
            except (OSError, LauncherError) as exc:
                raise InvalidInputError(
                    f"task {task.id}: {path} is not a regular file launcher can copy into a run: {exc}",
                    hint="task files are plain files (no symbolic links), at most "
                    f"{COPY_READ_MAX // (1024 * 1024)} MiB",
                ) from exc
        task_json, task_md = copies
        return task_json, task_md

    @contextmanager
    def locked(self, task_id: str) -> Iterator[None]:
        """The task's lock; file-system failures inside it (disk full, …) become StateStoreError."""
        lock = self.locks_dir / "tasks" / f"{task_id}.lock"
        try:
            with file_lock(lock, guards="task-file"):
                yield
        except LauncherError:
            raise  # a lock timeout is a TimeoutError, an OSError too: it says what it is itself
        except OSError as exc:
            where = exc.filename or lock
            raise StateStoreError(
                f"cannot write the files of task {task_id}: {exc.strerror or exc} ({where})",
                hint="check free disk space and permissions; the previous files were left intact",
            ) from exc

    def _ensure_dir(self, path: Path) -> None:
        missing = [p for p in (path.parent, *path.parent.parents) if not p.exists()]
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            owner = _owner_of(missing[-1].parent) if missing else None
            if owner is not None:
                for folder in missing:
                    os.chown(folder, *owner)
        except OSError as exc:
            raise StateStoreError(f"cannot create {path.parent}: {exc.strerror or exc}") from exc

    def _write_json(self, task: TaskRecord) -> None:
        """Write under the caller's lock; refuse to clobber a hand edit."""
        path = self.json_path(task)
        self._ensure_dir(path)
        try:
            existing = path.read_bytes()
        except FileNotFoundError:
            existing = None
        if existing is not None and task.file_sha256 and sha256(existing) != task.file_sha256:
            raise ExternalChangeError(
                f"{path} was changed outside launcher; launcher did not overwrite it",
                hint="`launcher task list` imports hand edits as the new truth; then retry",
            )
        if self.validate is not None:
            problems = self.validate(task.doc)
            if problems:
                raise InvalidInputError(
                    f"task {task.id} would not validate against the harness's task.schema.json: "
                    + "; ".join(problems[:5])
                )
        data = render_task_json(task.doc)
        if existing != data:
            atomic_write(path, data, owner=_owner_of(path.parent))
        self.store.record_file(task.id, str(path), sha256(data))

    def check_unchanged(self, task: TaskRecord) -> None:
        """Refuse, before a run is made, a task file edited by hand since launcher wrote it.

        A broken one (not JSON, not an object, not the harness's schema) says what is wrong
        (InvalidInputError); a valid one says how to import it (ExternalChangeError, as the
        write that would meet it later). Nothing is read beyond the file, nothing is written.
        """
        path = self.json_path(task)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return  # written afresh from the coordinator when the run starts
        except OSError as exc:
            raise InvalidInputError(f"cannot read the task file {path}: {exc.strerror or exc}") from exc
        if not task.file_sha256 or sha256(data) == task.file_sha256:
            return
        fix = "fix it (`launcher task list` then imports it), or delete it to have launcher write it again"
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InvalidInputError(
                f"task file {path} was edited by hand and is not valid JSON: {exc}", hint=fix
            ) from exc
        if not isinstance(doc, dict):
            raise InvalidInputError(f"task file {path} was edited by hand and is not a JSON object", hint=fix)
        problems = self.validate(doc) if self.validate is not None else []
        if problems:
            raise InvalidInputError(
                f"task file {path} was edited by hand and does not validate against the harness's "
                "task.schema.json: " + "; ".join(problems[:5]),
                hint=fix,
            )
        raise ExternalChangeError(
            f"task file {path} was changed outside launcher",
            hint="`launcher task list` imports hand edits as the new truth; then run it again",
        )

    def sync(self, task_id: str) -> TaskRecord:
        with self.locked(task_id):
            task = self.store.get_task(task_id)
            self._write_json(task)
            return self.store.get_task(task_id)

    def create(self, task_id: str, body: str | None, template: str | None = None) -> TaskRecord:
        template_text = self._template(template)
        with self.locked(task_id):
            task = self.store.get_task(task_id)
            self._write_json(task)
            md = self.md_path(task)
            if not md.exists():
                atomic_write(md, render_task_md(task, body, template_text).encode("utf-8"), owner=_owner_of(md.parent))
            return self.store.get_task(task_id)

    def _template(self, name: str | None) -> str | None:
        if name is None:
            return None
        path = self.templates / f"{name.removesuffix('.md')}.md"
        if path.parent != self.templates or not path.is_file():
            known = sorted(p.stem for p in self.templates.glob("*.md")) if self.templates.is_dir() else []
            raise InvalidInputError(f"no task template {name!r}", hint=f"templates: {', '.join(known) or 'none'}")
        return path.read_text(encoding="utf-8")

    def record_transition(self, task_id: str, transition: TransitionRecord) -> None:
        """Re-render the JSON and append the transition to the `.md` Progress Log."""
        with self.locked(task_id):
            task = self.store.get_task(task_id)
            self._write_json(task)
            md = self.md_path(task)
            existing = md.read_text(encoding="utf-8") if md.exists() else f"# {task.title}\n"
            if "## Progress Log" not in existing:
                existing = existing.rstrip("\n") + "\n\n## Progress Log\n\n"
            elif not existing.endswith("\n\n"):
                existing = existing.rstrip("\n") + "\n\n"
            atomic_write(md, (existing + progress_entry(transition)).encode("utf-8"), owner=_owner_of(md.parent))


def schema_validator(tasks_dir: Path) -> Callable[[dict[str, Any]], list[str]] | None:
    """A validator for the harness's tasks/task.schema.json, or None when it has none."""
    path = tasks_dir / "task.schema.json"
    if not path.is_file():
        return None
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
        Draft202012Validator.check_schema(schema)
    except (json.JSONDecodeError, SchemaError) as exc:
        raise InvalidInputError(f"{path} is not a valid JSON schema: {str(exc).splitlines()[0]}") from exc
    validator = Draft202012Validator(schema)

    def validate(doc: dict[str, Any]) -> list[str]:
        return [
            f"{'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}" for e in validator.iter_errors(doc)
        ]

    return validate

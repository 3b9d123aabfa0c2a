"""Where case-compatible task files are written (rendered from the coordinator)."""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

from launcher.models import TaskRecord, TransitionRecord


class TaskFilesPort(Protocol):
    """Where case-compatible task files are written (rendered from the coordinator)."""

    def json_path(self, task: TaskRecord) -> Path: ...

    def md_path(self, task: TaskRecord) -> Path: ...

    def read_md(self, task: TaskRecord, *, max_bytes: int | None = None, strict: bool = False) -> str | None:
        """The task's description (its .md), read up to ``max_bytes`` (None: the adapter's own cap,
        a pull request's); None when there is none.

        Not ``strict``, a file that cannot be read or is over the cap is None as well (a pull
        request goes without its description). ``strict``, only a missing file is None: one over
        the cap raises InvalidInputError, one that cannot be read (permissions, not a regular
        file, a symbolic link) raises OSError.
        """
        ...

    def read_copies(self, task: TaskRecord) -> tuple[bytes | None, bytes | None]:
        """The task's .json and .md as a run copies them (None: not on this machine, e.g. not yet
        rendered here from a shared coordinator): regular files read without following a
        symbolic link, within a size cap; else InvalidInputError naming the file."""
        ...

    def locked(self, task_id: str) -> AbstractContextManager[None]: ...

    def check_unchanged(self, task: TaskRecord) -> None:
        """Refuse a task whose file was edited by hand since launcher wrote it (nothing is written)."""
        ...

    def sync(self, task_id: str) -> TaskRecord: ...

    def create(self, task_id: str, body: str | None, template: str | None = None) -> TaskRecord: ...

    def record_transition(self, task_id: str, transition: TransitionRecord) -> None: ...

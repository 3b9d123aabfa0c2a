"""Ports: the interfaces core services need, implemented by the adapters.

The coordinator is the only writer of shared state.

A second backend implements this class in its own module; the core never sees which one
it talks to. Every mutation is one transaction, and every state change is a
compare-and-set: it names the state it expects and fails with a typed error otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from launcher.core.transitions import RunState, TaskStatus
from launcher.models import NewRun, NewTask, RunEventRecord, RunRecord, TaskRecord, TransitionRecord


class Coordinator(ABC):
    @abstractmethod
    def create_task(self, new: NewTask) -> TaskRecord:
        """Allocate the next number for ``new.prefix`` and store the task, in one transaction."""

    @abstractmethod
    def get_task(self, task_id: str) -> TaskRecord:
        """Raise NotFoundError when absent."""

    @abstractmethod
    def resolve_task(self, ref: str) -> TaskRecord:
        """Find a task by full ID or by its unambiguous ``<prefix>-<N>`` short form."""

    @abstractmethod
    def list_tasks(self, status: TaskStatus | None = None) -> list[TaskRecord]: ...

    @abstractmethod
    def transition(
        self, task_id: str, expected: TaskStatus, target: TaskStatus, *, reason: str | None, actor: str
    ) -> tuple[TaskRecord, TransitionRecord]:
        """Compare-and-set the task status; legal moves only; append to the history."""

    @abstractmethod
    def update_task_doc(
        self, task_id: str, expected_version: int, doc: dict[str, Any], *, actor: str
    ) -> TaskRecord:
        """Replace the task document (not its status) if the version still matches."""

    @abstractmethod
    def history(self, task_id: str) -> list[TransitionRecord]: ...

    @abstractmethod
    def create_run(self, new: NewRun) -> RunRecord:
        """Allocate the run ID and attempt number for a task, in one transaction."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord: ...

    @abstractmethod
    def list_runs(
        self, *, states: Iterable[RunState] | None = None, task_id: str | None = None
    ) -> list[RunRecord]: ...

    @abstractmethod
    def update_run(
        self,
        run_id: str,
        *,
        expected: Iterable[RunState] | None = None,
        state: RunState | None = None,
        detail: str | None = None,
        **changes: Any,
    ) -> RunRecord:
        """Change a run; when ``expected`` is given, only if its state is one of them."""

    @abstractmethod
    def run_events(self, run_id: str) -> list[RunEventRecord]: ...

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskFilesPort(Protocol):
    """Where case-compatible task files are written (rendered from the coordinator)."""

    def json_path(self, task_id: str) -> Path: ...

    def md_path(self, task_id: str) -> Path: ...

    def sync(self, task_id: str, load: Callable[[str], TaskRecord]) -> TaskRecord: ...

    def create(self, task: TaskRecord, body: str | None, load: Callable[[str], TaskRecord]) -> None: ...

    def record_transition(
        self, task_id: str, transition: TransitionRecord, load: Callable[[str], TaskRecord]
    ) -> None: ...

"""The coordinator: the only writer of shared state, seen by what each caller needs of it.

Every mutation is one transaction, and every state change is a compare-and-set: it names the
state it expects and fails with a typed error otherwise. A backend implements ``Coordinator``
(all four capabilities); a service asks only for the capabilities it uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from launcher.core.transitions import RunState, TaskStatus
from launcher.models import (
    AdoptedTask,
    NewRun,
    NewTask,
    RunEventRecord,
    RunRecord,
    TaskRecord,
    TransitionRecord,
)


class TaskStore(Protocol):
    """Tasks, their IDs, their documents and their status history."""

    def create_task(self, new: NewTask) -> TaskRecord:
        """Allocate the next number for ``new.prefix`` and store the task, in one transaction."""
        ...

    def get_task(self, task_id: str) -> TaskRecord:
        """Raise NotFoundError when absent."""
        ...

    def resolve_task(self, ref: str) -> TaskRecord:
        """Find a task by full ID or by its unambiguous ``<prefix>-<N>`` short form."""
        ...

    def list_tasks(self, status: TaskStatus | None = None) -> list[TaskRecord]: ...

    def transition(
        self,
        task_id: str,
        expected: TaskStatus,
        target: TaskStatus,
        *,
        reason: str | None,
        actor: str,
        fence: int | None = None,
    ) -> tuple[TaskRecord, TransitionRecord]:
        """Compare-and-set the task status; legal moves only; append to the history.

        With ``fence`` (a run's claim token) the task's ``claims`` must still equal it, in the
        same transaction: FencedOutError otherwise, nothing changed.
        """
        ...

    def adopt_task(self, task: AdoptedTask) -> TaskRecord:
        """Store a task found in a harness under its own ID; its number is reserved for good."""
        ...

    def reserve_numbers(self, prefix: str, number: int) -> None:
        """Never hand out ``number`` or anything below it for ``prefix`` again."""
        ...

    def task_file_paths(self) -> set[str]:
        """Every task file path the coordinator knows (cheap: no documents parsed)."""
        ...

    def record_file(self, task_id: str, path: str, sha256: str) -> None:
        """Remember where a task's file is and the hash of what launcher wrote there."""
        ...

    def import_external_change(self, task_id: str, doc: dict[str, Any], sha256: str) -> TaskRecord:
        """A hand edit of the task file becomes the new truth (status history says so)."""
        ...

    def update_task_doc(
        self, task_id: str, expected_version: int, doc: dict[str, Any], *, actor: str, fence: int | None = None
    ) -> TaskRecord:
        """Replace the task document (not its status) if the version still matches (and, with
        ``fence``, the claim token too: FencedOutError otherwise)."""
        ...

    def history(self, task_id: str) -> list[TransitionRecord]: ...


class QueueStore(Protocol):
    """The batch queue: claims are leases on the coordinator's clock.

    Every claim carries a fencing token: the task's ``claims`` right after it was taken. Taking
    a claim over from someone else (their lease ran out) adds one; the holder claiming again
    only extends its lease. Whoever acts for a claim later (settle, publish) checks its token
    against ``claims``: a smaller one is a claim someone else has since taken over.
    """

    def enqueue(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Queue tasks for batch workers (again, if they ran before); clears any lease."""
        ...

    def claim_next(self, owner: str, lease_seconds: float) -> TaskRecord | None:
        """Atomically take the oldest queued task whose lease is free or expired."""
        ...

    def claim_task(self, task_id: str, owner: str, lease_seconds: float) -> TaskRecord:
        """Atomically take this task's lease when it is free, expired or already ``owner``'s
        (queued or not); raise TaskClaimedError naming the holder otherwise. A claim taken over
        from someone else bumps ``claims`` (the fencing token); ``owner`` claiming again only
        extends its lease."""
        ...

    def renew_lease(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; False when the lease was lost to someone else."""
        ...

    def release_claim(self, task_id: str, owner: str, *, done: bool, fence: int | None = None) -> bool:
        """Give the lease back if ``owner`` holds it (and, with ``fence``, holds it under that
        token: never a newer claim of the same name); with ``done`` the task also leaves the
        queue. False when nothing was released."""
        ...


class RunStore(Protocol):
    """Runs: IDs and attempts allocated in one transaction, state changes as compare-and-set."""

    def create_run(self, new: NewRun) -> RunRecord:
        """Allocate the run ID and attempt number for a task, in one transaction."""
        ...

    def get_run(self, run_id: str) -> RunRecord: ...

    def list_runs(self, *, states: Iterable[RunState] | None = None, task_id: str | None = None) -> list[RunRecord]: ...

    def update_run(
        self,
        run_id: str,
        *,
        expected: Iterable[RunState] | None = None,
        state: RunState | None = None,
        detail: str | None = None,
        fence: int | None = None,
        **changes: Any,
    ) -> RunRecord:
        """Change a run; when ``expected`` is given, only if its state is one of them.

        With ``fence`` (the token of the claim the run went under) the run's task must still be
        at that claim, checked first and in the same transaction under the task's row lock:
        FencedOutError otherwise (a newer claim took the task over), nothing written. This is
        how a run settles: its final state is written only while its claim is the task's newest.

        ``details`` merge into the stored ones key by key, so independent steps never erase
        each other.
        """
        ...

    def run_events(self, run_id: str) -> list[RunEventRecord]: ...


class SubnetStore(Protocol):
    """Run-network subnets: like IDs, allocated in one transaction, never held twice."""

    def lease_subnet(self, run_id: str, slots: int, skip: Iterable[int] = ()) -> int:
        """Give the run the lowest free slot in ``[0, slots)`` that is not in ``skip``.

        A run holds at most one slot: a second lease replaces its first (how a caller moves
        on from a slot that Docker refused because something else on the engine uses it).
        Raises ``CapacityError`` when every slot is taken.
        """
        ...

    def release_subnet(self, run_id: str) -> bool:
        """Free the run's slot; False when it held none."""
        ...

    def transfer_subnet(self, holder: str, new_holder: str) -> bool:
        """Hand ``holder``'s lease to ``new_holder`` (a warm slot's network to the run taking it)."""
        ...

    def subnet_leases(self) -> dict[int, str]:
        """Every held slot and the run holding it."""
        ...


class PortStore(Protocol):
    """Host ports for runs (``--port``): like subnets, allocated in one transaction, never held twice."""

    def lease_port(self, run_id: str, name: str, low: int, high: int, skip: Iterable[int] = ()) -> int:
        """Give the run the lowest free port in ``[low, high]`` that is not in ``skip``, under ``name``.

        A run holds one port per name: a second lease of the name replaces its first (how a
        caller moves on from a port something else on the host holds). Raises ``CapacityError``
        when every port of the range is taken.
        """
        ...

    def release_ports(self, run_id: str) -> int:
        """Free every port the run holds; how many there were."""
        ...

    def port_leases(self) -> dict[int, tuple[str, str]]:
        """Every held port and the (run, name) holding it."""
        ...


class Coordinator(TaskStore, QueueStore, RunStore, SubnetStore, PortStore, Protocol):
    """Everything a backend provides, plus its connection's lifetime."""

    def close(self) -> None: ...

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

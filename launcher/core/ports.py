"""Ports: the interfaces core services need, implemented by the adapters.

The coordinator is the only writer of shared state.

A second backend implements this class in its own module; the core never sees which one
it talks to. Every mutation is one transaction, and every state change is a
compare-and-set: it names the state it expects and fails with a typed error otherwise.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from launcher.core.runlayout import PrivateGitSpec, RunPaths
from launcher.core.subnets import RunSubnet
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
    def adopt_task(self, task: AdoptedTask) -> TaskRecord:
        """Store a task found in a harness under its own ID; its number is reserved for good."""

    @abstractmethod
    def reserve_numbers(self, prefix: str, number: int) -> None:
        """Never hand out ``number`` or anything below it for ``prefix`` again."""

    @abstractmethod
    def task_file_paths(self) -> set[str]:
        """Every task file path the coordinator knows (cheap: no documents parsed)."""

    @abstractmethod
    def record_file(self, task_id: str, path: str, sha256: str) -> None:
        """Remember where a task's file is and the hash of what launcher wrote there."""

    @abstractmethod
    def import_external_change(self, task_id: str, doc: dict[str, Any], sha256: str) -> TaskRecord:
        """A hand edit of the task file becomes the new truth (status history says so)."""

    @abstractmethod
    def update_task_doc(self, task_id: str, expected_version: int, doc: dict[str, Any], *, actor: str) -> TaskRecord:
        """Replace the task document (not its status) if the version still matches."""

    @abstractmethod
    def history(self, task_id: str) -> list[TransitionRecord]: ...

    @abstractmethod
    def enqueue(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        """Queue tasks for batch workers (again, if they ran before); clears any lease."""

    @abstractmethod
    def claim_next(self, owner: str, lease_seconds: float) -> TaskRecord | None:
        """Atomically take the oldest queued task whose lease is free or expired."""

    @abstractmethod
    def renew_lease(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        """Extend ``owner``'s lease; False when the lease was lost to someone else."""

    @abstractmethod
    def release_claim(self, task_id: str, owner: str, *, done: bool) -> bool:
        """Give the lease back; with ``done`` the task also leaves the queue."""

    @abstractmethod
    def create_run(self, new: NewRun) -> RunRecord:
        """Allocate the run ID and attempt number for a task, in one transaction."""

    @abstractmethod
    def get_run(self, run_id: str) -> RunRecord: ...

    @abstractmethod
    def list_runs(self, *, states: Iterable[RunState] | None = None, task_id: str | None = None) -> list[RunRecord]: ...

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

    # -- network subnets: like IDs, allocated in one transaction, never held twice --

    @abstractmethod
    def lease_subnet(self, run_id: str, slots: int, skip: Iterable[int] = ()) -> int:
        """Give the run the lowest free slot in ``[0, slots)`` that is not in ``skip``.

        A run holds at most one slot: a second lease replaces its first (how a caller moves
        on from a slot that Docker refused because something else on the engine uses it).
        Raises ``CapacityError`` when every slot is taken.
        """

    @abstractmethod
    def release_subnet(self, run_id: str) -> bool:
        """Free the run's slot; False when it held none."""

    @abstractmethod
    def transfer_subnet(self, holder: str, new_holder: str) -> bool:
        """Hand ``holder``'s lease to ``new_holder`` (a warm slot's network to the run taking it)."""

    @abstractmethod
    def subnet_leases(self) -> dict[int, str]:
        """Every held slot and the run holding it."""

    @abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Coordinator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TaskFilesPort(Protocol):
    """Where case-compatible task files are written (rendered from the coordinator)."""

    def json_path(self, task: TaskRecord) -> Path: ...

    def md_path(self, task: TaskRecord) -> Path: ...

    def locked(self, task_id: str) -> AbstractContextManager[None]: ...

    def sync(self, task_id: str) -> TaskRecord: ...

    def create(self, task_id: str, body: str | None, template: str | None = None) -> TaskRecord: ...

    def record_transition(self, task_id: str, transition: TransitionRecord) -> None: ...


class MountSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    source: str | None = None
    kind: Literal["bind", "tmpfs"] = "bind"
    read_only: bool = False
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None


class SandboxSpec(BaseModel):
    """Everything needed to create a run's container; the adapter adds the security profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str
    name: str
    command: list[str]
    entrypoint: list[str]
    env: dict[str, str]
    user: str
    workdir: str
    labels: dict[str, str]
    mounts: list[MountSpec]
    writable_tmp: list[str]
    network: str
    memory: str
    cpus: float
    pids_limit: int
    runtime: str | None = None


class ContainerInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: str
    labels: dict[str, str]


class PoolSlot(BaseModel):
    """A warm pool slot (slot.json): a checked-out worktree and a started container waiting for a run.

    A run takes a slot only when every field that shapes the container matches what the run
    would have been given anyway, so taking a slot never changes what an agent sees.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    repo: str = Field(description="repository top level")
    project: str = Field(description="the task's repo field this slot serves (projects.json name or path)")
    image: str
    image_id: str
    base_sha: str = Field(description="what the worktree was checked out at; a run resets to its own base")
    network: Literal["none", "proxied"]
    subnet_slot: int | None = Field(default=None, description="the slot's /28 in [network].subnet_pool")
    uid: int
    gid: int
    container_id: str | None = None
    memory: str
    cpus: float
    pids_limit: int
    runtime: str | None = None
    tasks_view: bool = Field(description="whether the container has the run's task copy at /case/tasks")
    created_at: datetime

    def shape(self) -> tuple[object, ...]:
        """What must match for a run to take this slot; everything else is the run's own."""
        return (
            self.repo,
            self.project,
            self.image_id,
            self.network,
            self.memory,
            self.cpus,
            self.pids_limit,
            self.runtime,
            self.tasks_view,
        )


class NetworkInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    labels: dict[str, str]


class EgressNetworkPort(Protocol):
    """Per-run networks and the proxy that is their only way out."""

    def check_image(self) -> None: ...

    def create_network(self, name: str, subnet: RunSubnet, labels: dict[str, str]) -> None:
        """Raises SubnetInUseError when something else on the engine holds the subnet."""

    def remove_network(self, name: str) -> None: ...

    def networks(self) -> list[NetworkInfo]: ...

    def attach_proxy(self, network: str, ip: str) -> None: ...

    def remove_proxy_if_idle(self) -> bool: ...


class EgressFilesPort(Protocol):
    """Policy files the proxy reads and decision logs it writes."""

    def prepare(self) -> None: ...

    def write_policy(self, run_id: str, document: dict[str, Any]) -> None: ...

    def remove_policy(self, run_id: str) -> None: ...

    def policy_runs(self) -> list[str]: ...

    def log_name(self, run_id: str) -> str: ...

    def take_log(self, run_id: str, dest: Path) -> list[dict[str, Any]]: ...


class Sandbox(Protocol):
    def image_id(self, ref: str) -> str: ...

    def create(self, spec: SandboxSpec) -> str: ...

    def start(self, container_id: str) -> None: ...

    def logs(self, container_id: str) -> Iterator[bytes]: ...

    def wait(self, container_id: str, timeout: float | None) -> int | None: ...

    def kill(self, container_id: str) -> None: ...

    def remove(self, container_id: str) -> None: ...

    def inspect_state(self, container_id: str) -> dict[str, Any] | None: ...

    def list(self, labels: dict[str, str]) -> list[ContainerInfo]: ...

    def wait_for_output(self, container_id: str, marker: bytes, timeout: float) -> None:
        """Return once the container has printed ``marker``; DockerError if it exits or times out."""
        ...


class RepoPort(Protocol):
    """A repository on the host, as the run service uses it."""

    toplevel: Path
    git_dir: Path

    @property
    def objects_dir(self) -> Path: ...

    @property
    def owner_ids(self) -> tuple[int, int]: ...

    def resolve_commit(self, ref: str) -> str: ...

    def is_folder(self, commit: str, path: str) -> bool: ...

    def symbolic_branch(self, ref: str) -> str | None: ...

    def config_get(self, key: str) -> str | None: ...

    def add_worktree(self, path: Path, branch: str, base_sha: str) -> None: ...

    def remove_worktree(self, path: Path) -> None: ...

    def add_detached_worktree(self, path: Path, base_sha: str) -> None:
        """A worktree on no branch yet, without checkout: a warm pool slot."""
        ...

    def adopt_worktree(self, source: Path, path: Path, branch: str, base_sha: str) -> None:
        """A pool slot's worktree, moved from ``source`` to ``path``, gets the run's new branch."""
        ...

    def worktree_admin(self, path: Path) -> Path | None: ...

    def prune_worktrees(self) -> None: ...

    def worktree_paths(self) -> list[str]: ...

    def verify_bundle(self, bundle: Path) -> list[tuple[str, str]]: ...

    def fetch_bundle_head(self, bundle: Path, staging_ref: str) -> str: ...

    def update_ref(self, ref: str, new: str, old: str) -> None: ...

    def ref_value(self, ref: str) -> str | None: ...

    def delete_ref(self, ref: str) -> None: ...

    def is_ancestor(self, ancestor: str, descendant: str) -> bool: ...

    def commits_between(self, base: str, tip: str) -> list[dict[str, str]]: ...

    def diff_summary(self, base: str, tip: str) -> dict[str, object]: ...

    def read_tree_into_worktree_index(self, worktree_admin: Path, tree: str) -> None: ...


class WorkspacePort(Protocol):
    """The host file system work of a run (folders, private git dir, ownership, safe reads)."""

    def prepare_record(self, paths: RunPaths) -> None: ...

    def prepare_worktree_dir(self, worktree: Path, owner_uid: int, owner_gid: int) -> None: ...

    def write_private_git_dir(self, paths: RunPaths, spec: PrivateGitSpec) -> None: ...

    def write_tasks_scaffold(self, paths: RunPaths, harness_tasks: Path) -> None: ...

    def write_tasks_view(
        self, paths: RunPaths, task_id: str, task_json: bytes, task_md: bytes | None, harness_tasks: Path
    ) -> None: ...

    def write_case_scope(self, worktree: Path, task_id: str, task_json: bytes) -> None: ...

    def chown_tree(self, top: Path, uid: int, gid: int) -> None: ...

    def remove_tree(self, path: Path) -> None: ...

    def move_out(self, source: Path, target: Path) -> None: ...

    def copy_bundle_out(self, paths: RunPaths, *, max_bytes: int) -> Path | None: ...

    def read_in(self, top: Path, parts: list[str], *, max_bytes: int) -> bytes | None: ...


@dataclass(frozen=True)
class WarmingSlot:
    id: str
    folder: Path
    alive: bool = field(metadata={"doc": "its warmer still holds the slot's lock"})
    slot: PoolSlot | None


class PoolSlotsPort(Protocol):
    """Where warm slots live between warming and a run taking one (see adapters.poolslots)."""

    def worktree_of(self, slot_id: str) -> Path: ...

    def allocation_lock(self) -> AbstractContextManager[None]: ...

    def new_slot(self) -> AbstractContextManager[tuple[str, Path]]: ...

    def record(self, folder: Path, slot: PoolSlot) -> None: ...

    def publish(self, slot_id: str) -> None: ...

    def ready(self) -> list[PoolSlot]: ...

    def warming(self) -> list[WarmingSlot]: ...

    def read(self, folder: Path) -> PoolSlot | None: ...

    def claim(self, slot_id: str, dest: Path) -> bool: ...

    def claim_for_discard(self, slot_id: str, *, warming: bool = False) -> Path | None: ...

    def discarded(self) -> list[Path]: ...

    def make_control(self, folder: Path, uid: int, gid: int) -> Path: ...

    def open_go(self, folder: Path) -> int | None: ...

    def write_spec(
        self, folder: Path, env: dict[str, str], take: dict[str, str], argv: list[str], owner: tuple[int, int]
    ) -> None: ...

    def go(self, fd: int) -> None: ...

    def abandon(self, fd: int) -> None: ...

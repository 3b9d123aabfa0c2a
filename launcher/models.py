"""Pydantic models for everything that crosses a boundary: DB rows, files, CLI JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from launcher.core.transitions import RunState, TaskStatus


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """case's timestamps: ISO-8601, UTC, with an explicit offset."""
    return ts.astimezone(UTC).isoformat()


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NewTask(_Frozen):
    """What a caller asks the coordinator to store; the ID is allocated by the store."""

    prefix: str
    slug: str
    title: str
    repo: str = Field(description="repository name: the task ID prefix and case's `repo` field")
    repo_path: str | None = Field(default=None, description="absolute path of the repository")
    base_ref: str = "HEAD"
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    queued: bool = False
    doc: dict[str, Any] = Field(description="case's task.json document, without `id`")


class TaskRecord(_Frozen):
    id: str
    prefix: str
    number: int
    slug: str
    title: str
    repo: str
    repo_path: str | None
    base_ref: str
    image: str | None
    command: list[str]
    status: TaskStatus
    queued: bool
    version: int = Field(description="bumped on every change; the compare-and-set token for the document")
    doc: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    file_path: str | None = Field(default=None, description="where the task's .task.json lives")
    file_sha256: str | None = Field(default=None, description="hash of the file as launcher last wrote or read it")
    origin: str = Field(default="launcher", description="launcher, or adopted from an existing harness")
    queued_at: datetime | None = None
    lease_owner: str | None = Field(default=None, description="the batch worker that claimed the task")
    lease_expires: float | None = Field(default=None, description="unix time on the coordinator's clock")
    claims: int = 0


class AdoptedTask(_Frozen):
    """A task found in a case harness, taken into the coordinator as it is."""

    id: str
    prefix: str
    number: int
    slug: str
    title: str
    repo: str
    repo_path: str | None
    doc: dict[str, Any]
    file_path: str
    file_sha256: str


class TransitionRecord(_Frozen):
    seq: int
    task_id: str
    from_status: TaskStatus | None
    to_status: TaskStatus
    reason: str | None
    actor: str
    at: datetime


class RunOwner(_Frozen):
    """Who supervises a run: enough to tell later whether that process still lives."""

    host: str
    pid: int
    start_ticks: int | None = Field(default=None, description="process start time from /proc, guards pid reuse")


class RunRecord(_Frozen):
    id: str
    seq: int = Field(description="global run number; also picks the run's uid")
    task_id: str
    attempt: int
    state: RunState
    owner: RunOwner | None
    branch: str
    worktree: str
    image: str | None
    container_id: str | None = None
    exit_code: int | None = None
    uid: int | None = None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    cancel_requested: bool = False
    details: dict[str, Any] = Field(
        default_factory=dict, description="base commit, harvest summary, agent result, errors"
    )


class NewRun(_Frozen):
    task_id: str
    image: str | None
    owner: RunOwner | None
    worktrees_dir: str
    details: dict[str, Any] = Field(default_factory=dict)


class RunEventRecord(_Frozen):
    seq: int
    run_id: str
    from_state: RunState | None
    to_state: RunState
    at: datetime
    detail: str | None

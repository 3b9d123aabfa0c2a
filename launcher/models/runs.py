"""Runs as the coordinator stores them: who owns one, its record, its state history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from launcher.core.transitions import RunState
from launcher.models.common import Frozen
from launcher.models.details import RunDetails


class RunOwner(Frozen):
    """Who supervises a run: enough to tell later whether that process still lives."""

    host: str
    pid: int
    start_ticks: int | None = Field(default=None, description="process start time from /proc, guards pid reuse")


class RunRecord(Frozen):
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
    details: RunDetails = Field(default_factory=RunDetails, description="plan, harvest, network, results, errors")


class NewRun(Frozen):
    task_id: str
    image: str | None
    owner: RunOwner | None
    worktrees_dir: str
    details: dict[str, Any] = Field(default_factory=dict)


class RunEventRecord(Frozen):
    seq: int
    run_id: str
    from_state: RunState | None
    to_state: RunState
    at: datetime
    detail: str | None

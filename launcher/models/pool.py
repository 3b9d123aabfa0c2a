"""Warm pool slots: what one holds, and one being warmed."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


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


@dataclass(frozen=True)
class WarmingSlot:
    id: str
    folder: Path
    alive: bool = field(metadata={"doc": "its warmer still holds the slot's lock"})
    slot: PoolSlot | None

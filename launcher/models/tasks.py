"""Tasks as the coordinator stores them, and their status history."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import Field

from launcher.core.transitions import CaseEra, TaskStatus
from launcher.models.common import Frozen

_REPO_URL = "the repository's remote URL, credentials stripped: where another machine clones it from"


class NewTask(Frozen):
    """What a caller asks the coordinator to store; the ID is allocated by the store."""

    prefix: str
    slug: str
    title: str
    repo: str = Field(description="repository name: the task ID prefix and case's `repo` field")
    repo_path: str | None = Field(default=None, description="absolute path of the repository (a hint elsewhere)")
    repo_url: str | None = Field(default=None, description=_REPO_URL)
    base_ref: str = "HEAD"
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    queued: bool = False
    doc: dict[str, Any] = Field(description="case's task.json document, without `id`")


class TaskRecord(Frozen):
    id: str
    prefix: str
    number: int
    slug: str
    title: str
    repo: str
    repo_path: str | None = Field(description="where its creator's repository was: only a hint on other machines")
    repo_url: str | None = Field(default=None, description=_REPO_URL)
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


class AdoptedTask(Frozen):
    """A task found in a case harness, taken into the coordinator as it is."""

    id: str
    prefix: str
    number: int
    slug: str
    title: str
    repo: str
    repo_path: str | None
    repo_url: str | None = Field(default=None, description=_REPO_URL)
    base_ref: str = Field(default="HEAD", description="what its runs start from ([run].base_ref at adoption)")
    doc: dict[str, Any]
    file_path: str
    file_sha256: str


class TransitionRecord(Frozen):
    seq: int
    task_id: str
    from_status: TaskStatus | None
    to_status: TaskStatus
    reason: str | None
    actor: str
    at: datetime


class CaseLayoutFound(Frozen):
    """A layout of case whose task files `launcher init` found."""

    era: CaseEra = Field(
        description="harness: tasks/ under the case root (case at 3aa5f23); repo-local: "
        "<repo>/.case/tasks/ (case at 30b1fa1)"
    )
    where: list[str] = Field(description="the folders holding its task files")
    task_files: int
    repos: list[str] = Field(default_factory=list, description="repo-local: the repositories that have it")

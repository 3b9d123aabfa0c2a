"""Rows to records, shared by every backend: both read columns by name (sqlite3.Row, psycopg's dict rows)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from launcher.models import RunEventRecord, RunOwner, RunRecord, TaskRecord, TransitionRecord


def task_from_row(row: Any) -> TaskRecord:
    return TaskRecord(
        id=row["id"],
        prefix=row["prefix"],
        number=row["number"],
        slug=row["slug"],
        title=row["title"],
        repo=row["repo"],
        repo_path=row["repo_path"],
        repo_url=row["repo_url"],
        base_ref=row["base_ref"],
        image=row["image"],
        command=json.loads(row["command"]),
        status=row["status"],
        queued=bool(row["queued"]),
        version=row["version"],
        doc=json.loads(row["doc"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        file_path=row["file_path"],
        file_sha256=row["file_sha256"],
        origin=row["origin"],
        queued_at=row["queued_at"],
        lease_owner=row["lease_owner"],
        lease_expires=row["lease_expires"],
        claims=row["claims"],
    )


def run_from_row(row: Any) -> RunRecord:
    owner = RunOwner.model_validate_json(row["owner"]) if row["owner"] else None
    return RunRecord(
        id=row["id"],
        seq=row["seq"],
        task_id=row["task_id"],
        attempt=row["attempt"],
        state=row["state"],
        owner=owner,
        branch=row["branch"],
        worktree=row["worktree"],
        image=row["image"],
        container_id=row["container_id"],
        exit_code=row["exit_code"],
        uid=row["uid"],
        cancel_requested=bool(row["cancel_requested"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        ended_at=row["ended_at"],
        details=json.loads(row["details"]),
    )


def transition_from_row(row: Any) -> TransitionRecord:
    return TransitionRecord.model_validate(_columns(row, TransitionRecord))


def event_from_row(row: Any) -> RunEventRecord:
    return RunEventRecord.model_validate(_columns(row, RunEventRecord))


def _columns(row: Any, model: type[BaseModel]) -> dict[str, Any]:
    """The row's columns named like the model's fields (a record whose columns need no decoding)."""
    return {name: row[name] for name in model.model_fields}

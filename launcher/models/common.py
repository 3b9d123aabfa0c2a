"""What every model shares: the clock, case's timestamp form, and the frozen base."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    """case's timestamps: ISO-8601, UTC, with an explicit offset."""
    return ts.astimezone(UTC).isoformat()


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

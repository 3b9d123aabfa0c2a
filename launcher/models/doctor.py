"""What `launcher doctor --json` prints: one result per check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CheckStatus = Literal["ok", "warn", "fail", "skip"]


class CheckResult(BaseModel):
    """One check of `launcher doctor`: what it found and, when something is wrong, what to do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the check's name, as `--skip NAME` takes it")
    status: CheckStatus = Field(
        description="ok; warn (runs work, something deserves a look); fail; skip (not checked: a check it "
        "depends on failed, or --skip / --quick)"
    )
    detail: str = Field(description="what was found")
    hint: str | None = Field(default=None, description="what to do about it (warn and fail)")
    blocking: bool = Field(default=False, description="true when this failure stops runs: doctor then exits 1")

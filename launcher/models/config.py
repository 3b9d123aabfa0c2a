"""What `launcher config show --json` prints: one effective setting per entry, with where it came from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue

SettingSource = Literal["default", "launcher.toml", "env", "flag"]


class SettingView(BaseModel):
    """One effective setting of a case root. Secrets never appear: a URL's password is `***`, a
    token only by the name of the variable that holds it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: str = Field(description="dotted key: `state_url`, `run.timeout`, `agent.claude.image`, `repos.NAME`")
    value: JsonValue = Field(description="the value launcher uses (credentials redacted); null: unset")
    source: SettingSource = Field(
        description="default; launcher.toml; env (a variable of launcher's environment); flag (this command line)"
    )
    origin: str | None = Field(
        default=None,
        description="launcher.toml: the file's path; env: the variable's name; flag: the option; default: "
        "what the default is, when it is not a plain value (e.g. a built-in agent profile), else null",
    )

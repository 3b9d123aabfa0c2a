"""What a caller asks for, and the plan that everything refusable was checked against."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from launcher.core.netpolicy import EgressPolicy
from launcher.core.portleases import PortWish
from launcher.core.ports import RepoPort
from launcher.core.user_labels import check_labels
from launcher.models import TaskRecord
from launcher.settings import AgentProfile, PublishSettings, ServiceSettings

Ending = Literal["exited", "failed", "timed-out", "cancelled", "lost", "exceeded"]


class RunRequest(BaseModel):
    """What a caller asks for; unset fields fall back to the task, then to launcher.toml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0)
    grace: float | None = Field(default=None, ge=0, le=3600, description="seconds from SIGTERM to SIGKILL")
    keep_worktree: bool | None = None
    network: Literal["none", "allowlist", "open", "bridge"] | None = None
    allow: list[str] = Field(default_factory=list, description="HOST, *.SUFFIX or HOST:PORT")
    presets: list[str] = Field(default_factory=list, description="named host lists")
    api_keys: list[str] = Field(default_factory=list, description="NAME=UPSTREAM; the proxy holds the key")
    secrets: list[str] = Field(default_factory=list, description="NAME (host env) or NAME=FILE")
    runtime: str | None = None
    pool: bool = Field(default=True, description="take a matching warm pool slot when one is ready")
    sparse: list[str] = Field(default_factory=list, description="check out only these folders (git cone mode)")
    repo: str | None = Field(
        default=None,
        description="the task's repository on this machine for this run: a path (`run TASK --repo` resolves "
        "names and URLs to one); None: found by launcher/core/repos.py",
    )
    push: bool | None = Field(default=None, description="the host pushes the branch after harvest ([publish] push)")
    remote: str | None = Field(default=None, description="where to push ([publish] remote)")
    pr: bool | None = Field(default=None, description="open or update the task attempt's pull request ([publish] pr)")
    ca_file: str | None = Field(default=None, description="an extra CA the run trusts ([network] ca_file)")
    devcontainer: bool | None = Field(
        default=None, description="run in the repository's .devcontainer environment ([run] image = 'devcontainer')"
    )
    concurrent: bool = Field(
        default=False, description="run even while another live run holds the task's claim (a second attempt)"
    )
    agent: str | None = Field(default=None, description="the agent profile's name, for the run's record")
    profile: AgentProfile | None = Field(
        default=None, description="the agent profile (resolved by the caller: --agent, else [agent] default)"
    )
    prompt: str | None = Field(default=None, description="the prompt (--prompt / --prompt-file); else the task's .md")
    ports: list[str] = Field(
        default_factory=list, description="NAME[=[SERVICE:]PORT]: a host port leased on 127.0.0.1 (--port)"
    )
    services: list[str] = Field(default_factory=list, description="[run.services] names to start (--service)")
    labels: dict[str, str] = Field(
        default_factory=dict, description="the user's KEY=VALUE labels, kept with the run (--label)"
    )

    @field_validator("labels")
    @classmethod
    def _labels_kept(cls, labels: dict[str, str]) -> dict[str, str]:
        return check_labels(labels)


@dataclass(frozen=True)
class RunPlan:
    task: TaskRecord
    repo: RepoPort
    image: str
    image_id: str
    command: list[str]
    timeout: float
    keep_worktree: bool
    egress: EgressPolicy
    runtime: str | None
    base_sha: str
    base_branch: str | None
    secrets: dict[str, str]
    api_key_values: dict[str, str]
    pool: bool = True
    sparse: list[str] = field(default_factory=list)
    grace: float = 10.0
    # What the host publishes after harvest: [publish] with this run's --push/--remote/--pr; None: nothing.
    publish: PublishSettings | None = None
    concurrent: bool = False
    ca_file: str | None = None
    # The agent profile's name, its variables, and the prompt the command was given (None: none).
    agent: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    devcontainer: str | None = None
    environment_notes: list[str] = field(default_factory=list)
    prompt: str | None = None
    # Commands run before the agent ([run] setup, then the profile's); untracked files copied in.
    setup: list[str] = field(default_factory=list)
    includes: dict[str, bytes] = field(default_factory=dict)
    # What the run's log never shows besides secrets' and keys' values: the includes' lines.
    redact: tuple[str, ...] = ()
    # Host ports leased for the run (on 127.0.0.1) and the sidecar services started on its network.
    ports: tuple[PortWish, ...] = ()
    services: dict[str, ServiceSettings] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

"""What `--json` prints: records plus the facts a reader needs next to them (paths, logs).

The JSON Schemas shipped in ``launcher/schemas/`` are generated from these models
(``python -m launcher.models.schemas``); a test checks real output against them.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from launcher.core.transitions import LIVE_RUN_STATES
from launcher.models.details import PublishDetails
from launcher.models.runs import RunRecord
from launcher.models.tasks import TaskRecord, TransitionRecord


class EgressView(BaseModel):
    """What a run tried to reach (from its settled decision log)."""

    model_config = ConfigDict(frozen=True)

    decisions: int | None = None
    allowed: list[str] | None = Field(default=None, description="the most frequent allowed HOST:PORT (at most 20)")
    denied: list[str] | None = Field(default=None, description="the most frequent refused HOST:PORT (at most 20)")
    allowed_decisions: int | None = None
    denied_decisions: int | None = None
    allowed_hosts: int | None = Field(default=None, description="distinct HOST:PORT allowed")
    denied_hosts: int | None = Field(default=None, description="distinct HOST:PORT refused")
    hosts_capped: bool | None = None
    log: str | None = Field(default=None, description="every decision, one JSON line each")


class RunView(RunRecord):
    """A run as `launcher run --json` and `launcher ps --json` print it."""

    log: str | None = Field(description="the run's output log on the host")
    egress: EgressView | None = Field(description="what it tried to reach; null before its network is settled")
    publish: PublishDetails | None = Field(
        default=None,
        description="where the host pushed its work (remote without credentials, ref, sha) or why not; "
        "null when it was not asked to publish",
    )
    ports: dict[str, str] = Field(
        default_factory=dict,
        description="each leased port's name and the URL the host reaches it at (127.0.0.1 only), while the run "
        "lives; what it had is in details.ports",
    )
    labels: dict[str, str] = Field(default_factory=dict, description="the user's own labels (--label KEY=VALUE)")

    @classmethod
    def of(cls, run: RunRecord) -> RunView:
        recorded = run.details.egress
        egress = (
            EgressView.model_validate({name: getattr(recorded, name) for name in EgressView.model_fields})
            if recorded is not None
            else None
        )
        return cls.model_validate(
            {
                **run.model_dump(),
                "log": run.details.log,
                "egress": egress,
                "publish": run.details.publish,
                "labels": run.details.labels or {},
                "ports": {
                    p.name: p.url for p in run.details.ports or [] if p.name and p.url and run.state in LIVE_RUN_STATES
                },
            }
        )


class TaskPaths(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    json_: str = Field(alias="json", description="the task's .task.json")
    md: str = Field(description="the task's .md beside it")


class TaskView(TaskRecord):
    """A task as `task create/list/set-status --json` print it."""

    paths: TaskPaths


class TaskDetailView(TaskView):
    """A task as `task show --json` prints it: with its status history and its runs."""

    history: list[TransitionRecord]
    runs: list[RunRecord]

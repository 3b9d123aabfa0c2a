"""What a run's record says about it beyond its columns: plan, harvest, network, results.

Each step of a run adds its part (``update_run(details={...})`` merges by key), so every field is
optional, and records written by older launchers (other keys, missing ones) still load: unknown
keys are kept as they are. A part is dumped with only the fields it was given, so the JSON a
run's record prints says what happened, not a list of nulls.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_serializer,
    model_validator,
)


class Recorded(BaseModel):
    """A part of a run's record: tolerant of old rows, dumped with only the fields it was given."""

    model_config = ConfigDict(frozen=True, extra="allow")

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        given = self.model_fields_set | set(self.model_extra or {})
        return {key: value for key, value in data.items() if key in given}


class NetworkChoice(Recorded):
    """The egress policy the run was planned with (never a key's value)."""

    mode: str | None = None
    allow: list[str] = Field(default_factory=list)
    api_keys: dict[str, str] = Field(default_factory=dict, description="key name -> upstream")


class EgressDetails(Recorded):
    """The run's network (recorded when made) and what it tried to reach (when taken down)."""

    network: str | None = None
    subnet: str | None = None
    proxy_ip: str | None = None
    decisions: int | None = Field(default=None, description="every decision the proxy made for the run")
    allowed: list[str] | None = Field(default=None, description="the 20 most frequent allowed HOST:PORT")
    denied: list[str] | None = Field(default=None, description="the 20 most frequent refused HOST:PORT")
    allowed_decisions: int | None = None
    denied_decisions: int | None = None
    allowed_hosts: int | None = Field(default=None, description="how many distinct HOST:PORT were allowed")
    denied_hosts: int | None = Field(default=None, description="how many distinct HOST:PORT were refused")
    hosts_capped: bool | None = Field(
        default=None, description="more distinct hosts than were counted one by one (100,000)"
    )
    log: str | None = Field(default=None, description="the settled decision log: every decision, one JSON line each")


class PortDetails(Recorded):
    """A host port leased for the run: published on 127.0.0.1 only, released when it settles."""

    name: str | None = None
    host_port: int | None = None
    container_port: int | None = None
    service: str | None = Field(default=None, description="the service it leads to; absent: the agent")
    url: str | None = Field(default=None, description="http://127.0.0.1:<host_port>")


class ServiceDetails(Recorded):
    """A sidecar service of the run, on its network: how far it got, where its log is."""

    name: str | None = None
    image: str | None = None
    container: str | None = Field(default=None, description="its container's name on the engine")
    ip: str | None = None
    state: str | None = Field(default=None, description="starting, healthy, unhealthy, exited")
    log: str | None = Field(default=None, description="its output, kept with the run's once it is removed")


class ServiceFailureDetails(Recorded):
    """Set when a service never became healthy: the run ended before its agent started."""

    name: str | None = None
    reason: str | None = None
    log: str | None = None


class CommitInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    sha: str
    subject: str = ""


class DiffSummary(Recorded):
    files_changed: int = 0
    insertions: int = 0
    deletions: int = 0
    files: list[str] = Field(default_factory=list, description="the first 200 paths")


class HarvestDetails(Recorded):
    """What the host took from the run's bundle: onto its branch, and kept under its own refs."""

    commits: list[CommitInfo] = Field(default_factory=list)
    tip: str | None = None
    diff: DiffSummary | None = None
    warnings: list[str] = Field(default_factory=list)
    error: str | None = Field(default=None, description="why the harvest could not complete")
    refs: dict[str, str] = Field(
        default_factory=dict,
        description="the run's other branches, tags and stashes, kept in the repository under "
        "refs/launcher/runs/<run-id>/ (ref -> object)",
    )
    wip: str | None = Field(
        default=None, description="the ref of the commit on HEAD holding the run's uncommitted and untracked work"
    )
    rewritten: dict[str, str] = Field(
        default_factory=dict, description="commits the branch holds without their .case/ changes (original -> new)"
    )
    bundle: str | None = Field(default=None, description="where the run's bundle is kept (host-only)")
    kept_worktree: str | None = Field(
        default=None, description="the agent's worktree, left as it was: its content is not captured elsewhere"
    )
    kept_sandbox: str | None = Field(
        default=None, description="the run's private git dir and out/ as it left them (their objects are nowhere else)"
    )
    recover: list[str] = Field(default_factory=list, description="how to get the work of an unharvested run")
    ending: str | None = Field(default=None, description="how the agent ended, for a run recorded unharvested")
    imported: str | None = Field(default=None, description="the branch `launcher import` put the work on")


class TaskChangeReport(BaseModel):
    """What the host did with the task changes a run asked for (every field, always)."""

    model_config = ConfigDict(extra="allow")

    requested_status: str | None = None
    applied_status: str | None = None
    applied_fields: list[str] = Field(default_factory=list)
    refused: list[str] = Field(default_factory=list)
    not_applied: list[str] = Field(
        default_factory=list,
        description="what it asked for that was never applied because a newer claim took the task over "
        "(the run is superseded): field names, and status:<target>",
    )
    markers: dict[str, dict[str, str]] = Field(default_factory=dict, description="case's marker files found")
    carried_back: list[str] = Field(
        default_factory=list,
        description="today's case: files of the run's .case/ written into the main checkout's .case/ "
        "(new event logs, changed markers, run-log.jsonl lines), as paths under .case/",
    )
    not_carried: list[str] = Field(
        default_factory=list, description="today's case: what of the run's .case/ was not carried back, and why"
    )


class CaseScopeDetails(Recorded):
    """What of the main checkout's .case/ a run of today's case was given (to tell its new files)."""

    case_dir: str = Field(description="the main checkout's .case/ folder the task's state lives in")
    task_file: str = Field(description="the task file's name in .case/tasks/active/")
    run_log_size: int = Field(default=0, description="bytes of run-log.jsonl copied in (0: none)")
    run_log_sha256: str | None = None
    copied_in: list[str] = Field(default_factory=list, description="files copied in, as paths under .case/")


class AgentArtifacts(Recorded):
    """case's artifact names are camelCase; kept as they are so the JSON round-trips."""

    commit: str | None = None
    filesChanged: list[str] | None = None
    testsPassed: bool | None = None
    screenshotUrls: list[str] | None = None
    evidenceMarkers: list[str] | None = None
    prUrl: str | None = None
    prNumber: int | None = None


class AgentResult(Recorded):
    """case's AGENT_RESULT block."""

    status: Literal["completed", "failed", "blocked"]
    summary: str = ""
    artifacts: AgentArtifacts = Field(default_factory=AgentArtifacts)
    findings: Any = None
    rubric: Any = None
    error: str | None = None


class AgentResultReport(Recorded):
    state: Literal["valid", "missing", "invalid"]
    result: AgentResult | None = None
    error: str | None = None


class ExceededDetails(Recorded):
    """The bound a run was stopped at."""

    bound: Literal["disk", "reserve"] = Field(description="disk: its own budget; reserve: the disk's free space")
    limit: int = Field(description="bytes: the budget, or the reserve to keep free")
    used: int = Field(description="bytes the run's folders held when it was stopped")
    free: int = Field(description="bytes left on the disk when it was stopped")


class ClaimDetails(Recorded):
    """The run's claim on its task: who held it, and the fencing token it was taken with."""

    owner: str | None = Field(default=None, description="the lease owner; None: --concurrent ran without a claim")
    fence: int | None = Field(default=None, description="the task's claim count when taken: newer claims are higher")
    borrowed: bool = Field(default=False, description="a batch worker's claim the run went under")
    lost: bool | None = Field(default=None, description="its renewal failed: another attempt may have taken over")


class SupersededDetails(Recorded):
    """A newer claim took the run's task over before the run settled: it is not the task's result.

    Its harvest is kept (its branch, its refs, the record); its task changes were not applied,
    its branch is not published; the task's result is the newer attempt's.
    """

    fence: int = Field(description="the fencing token of the claim this run went under")
    current: int = Field(description="the task's claim count when the run settled: the newer claim's token")
    holder: str | None = Field(default=None, description="who held the task's lease then (None: released already)")
    at: str = Field(description="when the run found out, settling (ISO-8601 UTC)")


class BranchPrunedDetails(Recorded):
    """`launcher prune` deleted the run's branch and kept refs (the row stays: no name is reused)."""

    tip: str = Field(description="the commit the branch pointed at when it was deleted")
    refs: list[str] = Field(default_factory=list, description="the kept refs deleted with it")
    at: str = Field(description="when")


class PullRequestDetails(Recorded):
    """The forge's pull request for this task attempt."""

    forge: str = Field(description="github")
    number: int
    url: str
    draft: bool
    action: Literal["opened", "updated"] = Field(description="opened now, or an existing one updated")


class PublishDetails(Recorded):
    """Where the host published the run's work, or why it could not."""

    remote: str = Field(description="the remote's name or URL, credentials never included")
    ref: str | None = Field(default=None, description="the remote ref the branch was pushed to")
    sha: str | None = Field(
        default=None,
        description="the commit launcher last pushed there (kept after a refused push: the next push's lease)",
    )
    refs: dict[str, str] | None = Field(default=None, description="kept refs pushed: remote ref -> object")
    note: str | None = Field(default=None, description="why nothing was pushed, when that is no failure")
    wip_ref: str | None = Field(default=None, description="the remote ref of the kept uncommitted work, if any")
    pushed: bool = False
    error: str | None = Field(default=None, description="why the push or the pull request failed; branch kept")
    pull_request: PullRequestDetails | None = None


class SetupDetails(Recorded):
    """A run whose setup ([run] setup, the agent profile's) failed: the agent never started."""

    failed_command: str | None = None
    exit_code: int | None = None


class RunDetails(Recorded):
    """Everything the steps of a run recorded about it.

    A part an older (or newer) launcher wrote in a shape this one does not read is kept as it
    was and printed back unchanged; it reads as None here. One unreadable part never makes a
    run's record unreadable.
    """

    _unreadable: dict[str, Any] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _tolerant(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> RunDetails:
        try:
            made: RunDetails = handler(data)
            return made
        except ValidationError as exc:
            if not isinstance(data, dict):
                raise
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            made = handler({key: value for key, value in data.items() if key not in bad})
            made._unreadable = {key: data[key] for key in bad if key in data}
            return made

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {**Recorded._only_given(self, handler), **self._unreadable}

    # planned (claim)
    base_sha: str | None = None
    base_branch: str | None = None
    command: list[str] | None = None
    network: NetworkChoice | None = None
    timeout: float | None = None
    keep_worktree: bool | None = None
    sparse: list[str] | None = None
    secrets: list[str] | None = Field(default=None, description="names only, never values")
    repo: str | None = Field(default=None, description="the repository's top level on the launcher's host")
    log: str | None = Field(default=None, description="the run's output, secrets redacted")
    grace: float | None = Field(default=None, description="seconds from SIGTERM to SIGKILL when it is stopped")
    claim: ClaimDetails | None = None
    devcontainer: str | None = Field(default=None, description="the devcontainer.json the run's image was built from")
    environment_notes: list[str] | None = Field(
        default=None, description="what of the devcontainer.json launcher ignored, and why"
    )
    agent: str | None = Field(default=None, description="the agent profile the run used (--agent, [agent] default)")
    prompt: str | None = Field(default=None, description="the prompt the agent was given (its first 64 KiB)")
    labels: dict[str, str] | None = Field(default=None, description="the user's own labels (--label KEY=VALUE)")
    # prepared
    task_snapshot: dict[str, Any] | None = Field(default=None, description="the task document the run started from")
    task_version: int | None = None
    case_scope: CaseScopeDetails | None = Field(
        default=None, description="today's case (repo-local .case/): what the run's own .case/ started from"
    )
    pool_slot: str | None = Field(default=None, description="the warm pool slot the run took")
    pool_base_sha: str | None = None
    egress: EgressDetails | None = None
    ports: list[PortDetails] | None = Field(default=None, description="host ports leased for the run (--port)")
    port_relay: str | None = Field(default=None, description="the container that publishes them")
    services: list[ServiceDetails] | None = Field(default=None, description="its sidecar services (--service)")
    service_failure: ServiceFailureDetails | None = Field(
        default=None, description="set when a service did not become healthy (exit 20): not the agent's failure"
    )
    # ran
    oom_killed: bool | None = None
    exceeded: ExceededDetails | None = None
    disk_used: int | None = Field(default=None, description="bytes its folders held at the last look")
    memory_limit: str | None = None
    output_bytes: int | None = Field(default=None, description="bytes the agent wrote (stdout and stderr)")
    log_dropped: int | None = Field(
        default=None, description="bytes of output left out of the log (marked where), over log_max"
    )
    log_max: int | None = Field(default=None, description="the log's size cap, when it dropped output")
    log_error: str | None = Field(default=None, description="why the log may lack some of the output")
    # settled
    infrastructure_failure: bool | None = Field(default=None, description="the machinery failed, not the agent")
    harvest: HarvestDetails | None = None
    superseded: SupersededDetails | None = Field(
        default=None, description="set when a newer claim took the task over before the run settled"
    )
    setup: SetupDetails | None = Field(default=None, description="set when a setup command failed")
    task_changes: TaskChangeReport | None = None
    agent_result: AgentResultReport | None = None
    errors: list[str] | None = None
    removed: bool | None = Field(default=None, description="`launcher rm` removed its container and folders")
    pruned: bool | None = Field(default=None, description="`gc --older-than/--max-records` removed its record folder")
    branch_pruned: BranchPrunedDetails | None = None
    # published (after settle, by the host)
    publish: PublishDetails | None = None

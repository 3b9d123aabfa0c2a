"""Warm pools: worktrees checked out and containers started before any run asks for them.

`launcher pool warm --repo R --size N` makes N slots. Each is a worktree (on no branch yet), a
private git dir with the checkout done, a started container blocked on a FIFO, and for
proxied runs a network already joined by the egress proxy. A run whose repository, image,
network kind and limits match takes a slot (see ``core.run.pool_take``): the worktree is
moved to the run's path, the run's branch is created, the policy is written, and one line
down the FIFO starts the agent. Slots are used once; `pool warm` tops the pool up again.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from launcher.core import labels, uids
from launcher.core.ports import PoolSlotsPort, RepoPort
from launcher.core.run.container import base_env, container_name, container_spec
from launcher.core.run.deps import RunDeps
from launcher.core.run.pool_take import POOL_READY_LINE, discard_slot
from launcher.core.run.workspace import agent_email, give_to_uid
from launcher.core.runlayout import PrivateGitSpec, RunPaths
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import InvalidInputError, LauncherError
from launcher.models import MountSpec, PoolSlot, utcnow

# A 50,000-file checkout on a slow disk takes minutes; a slot that takes longer is broken.
WARM_TIMEOUT_S = 900.0
MAX_POOL_SIZE = 64
POOL_BRANCH = "launcher-pool"
CONTAINER_CONTROL = "/launcher/ctl"


class WarmRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    repo_path: str
    project: str = Field(description="the task repo name runs will carry (projects.json name or derived)")
    size: int = Field(ge=0, le=MAX_POOL_SIZE)
    image: str
    network: Literal["none", "proxied"]
    base_ref: str


class SlotView(BaseModel):
    """One slot, as `launcher pool ls --json` prints it."""

    model_config = ConfigDict(frozen=True)

    id: str
    state: Literal["ready", "warming"]
    repo: str | None = None
    project: str | None = None
    image: str | None = None
    network: str | None = None
    base_sha: str | None = None
    uid: int | None = None
    container_id: str | None = None
    created_at: str | None = None


class WarmReport(BaseModel):
    ready_before: int
    warmed: list[str] = Field(default_factory=list)
    superseded: list[str] = Field(
        default_factory=list, description="ready slots no run could take any more (image or limits changed)"
    )
    failed: list[str] = Field(default_factory=list)
    ready_after: int


class DrainReport(BaseModel):
    removed: list[str] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class PoolService:
    def __init__(self, deps: RunDeps) -> None:
        if deps.pool is None:
            raise InvalidInputError("this launcher has no warm pool (no Docker engine?)")
        self.deps = deps
        self.slots: PoolSlotsPort = deps.pool

    # -- warming -------------------------------------------------------------------------

    def warm(self, request: WarmRequest, progress: Callable[[str], None] = lambda _line: None) -> WarmReport:
        deps, d = self.deps, self.deps.defaults
        repo = deps.open_repo(request.repo_path)
        if str(repo.toplevel) != request.repo_path:
            request = request.model_copy(update={"repo_path": str(repo.toplevel)})
        base_sha = repo.resolve_commit(request.base_ref)
        image_id = deps.sandbox.image_id(request.image)
        if request.network == "proxied":
            if deps.egress is None:
                raise InvalidInputError("this launcher has no egress proxy; warm with --network none")
            deps.egress.check()
        # Where task files go (as `launcher init` makes it), so slots mount the run's task copy.
        (deps.tasks_dir / "active").mkdir(parents=True, exist_ok=True)
        template = PoolSlot(
            id="-",
            repo=str(repo.toplevel),
            project=request.project,
            image=request.image,
            image_id=image_id,
            base_sha=base_sha,
            network=request.network,
            uid=0,
            gid=0,
            memory=d.memory,
            cpus=d.cpus,
            pids_limit=d.pids_limit,
            runtime=d.runtime,
            tasks_view=deps.tasks_view_mounted(),
            created_at=utcnow(),
        )
        superseded = self._discard_superseded(template)
        with ExitStack() as held:
            # Counting and reserving under one lock: two warmers at once top up to --size, not beyond.
            with self.slots.allocation_lock():
                serving = self.slots.ready() + [w.slot for w in self.slots.warming() if w.alive and w.slot]
                serving = [s for s in serving if s.shape() == template.shape()]
                report = WarmReport(ready_before=len(serving), ready_after=len(serving), superseded=superseded)
                reserved = []
                for _ in range(request.size - len(serving)):
                    slot_id, folder = held.enter_context(self.slots.new_slot())
                    uid, gid = self._free_uid()
                    slot = template.model_copy(update={"id": slot_id, "uid": uid, "gid": gid, "created_at": utcnow()})
                    # Recorded before anything is made, so gc can undo a warmer that dies from here on.
                    self.slots.record(folder, slot)
                    reserved.append((slot, folder))
            if not reserved:
                return report
            progress(f"warming {len(reserved)} slot(s) for {repo.toplevel} ({request.network} network)")
            # Containers start in parallel; each slot's checkout runs in its own container.
            with ThreadPoolExecutor(max_workers=min(len(reserved), 4), thread_name_prefix="pool-warm") as workers:
                outcomes = list(workers.map(lambda r: self._warm_slot(r[0], r[1], repo), reserved))
        for slot_id, error in outcomes:
            if error is None:
                report.warmed.append(slot_id)
                progress(f"slot {slot_id} ready")
            else:
                report.failed.append(f"{slot_id}: {error}")
                progress(f"slot {slot_id} failed: {error}")
        report.ready_after = report.ready_before + len(report.warmed)
        return report

    def _discard_superseded(self, template: PoolSlot) -> list[str]:
        """Ready slots for the same repository and network kind that no run would take now
        (the image was rebuilt, the limits changed): they only hold a container and a uid."""
        gone = []
        for slot in self.slots.ready():
            purpose = (slot.repo, slot.project, slot.network)
            if purpose != (template.repo, template.project, template.network) or slot.shape() == template.shape():
                continue
            folder = self.slots.claim_for_discard(slot.id)
            if folder is not None:
                discard_slot(self.deps, slot, folder, [])
                gone.append(slot.id)
        return gone

    def _warm_slot(self, slot: PoolSlot, folder: Path, repo: RepoPort) -> tuple[str, str | None]:
        deps, ws = self.deps, self.deps.workspace
        slot_id, uid, gid = slot.id, slot.uid, slot.gid
        paths = RunPaths(slot_id, self.slots.worktree_of(slot_id), folder, folder / "record")
        try:
            owner_uid, owner_gid = repo.owner_ids
            with deps.marks.making(paths.worktree):
                ws.prepare_worktree_dir(paths.worktree, owner_uid, owner_gid)
            repo.add_detached_worktree(paths.worktree, slot.base_sha)
            ws.write_private_git_dir(
                paths,
                PrivateGitSpec(
                    branch=POOL_BRANCH,
                    base_sha=slot.base_sha,
                    base_branch=None,
                    object_format=repo.config_get("extensions.objectformat"),
                    user_name="launcher agent",
                    user_email=agent_email(slot_id),
                    shallow_file=repo.git_dir / "shallow",
                ),
            )
            ws.write_tasks_scaffold(paths, deps.tasks_dir)
            control = self.slots.make_control(folder, uid, gid)
            give_to_uid(deps, paths, repo, uid, gid)
            network = None
            if slot.network == "proxied":
                assert deps.egress is not None
                network = deps.egress.open_slot(slot_id)
                slot = slot.model_copy(update={"subnet_slot": network.subnet.slot})
                self.slots.record(folder, slot)
                deps.checkpoint("pool:after-network")
            spec = container_spec(
                deps,
                repo=repo,
                project=slot.project,
                image=slot.image,
                runtime=slot.runtime,
                paths=paths,
                uid=uid,
                gid=gid,
                network=network,
                name=container_name(deps, f"pool-{slot_id}"),
                labels=labels.for_root(deps.root, "pool", **{labels.POOL_SLOT: slot_id}),
                command=[],
                env=base_env(LAUNCHER_PHASE="pool"),
                extra_mounts=(MountSpec(target=CONTAINER_CONTROL, source=str(control), read_only=True),),
            )
            container_id = deps.sandbox.create(spec)
            slot = slot.model_copy(update={"container_id": container_id})
            self.slots.record(folder, slot)
            deps.sandbox.start(container_id)
            deps.checkpoint("pool:after-start")
            deps.sandbox.wait_for_output(container_id, POOL_READY_LINE, WARM_TIMEOUT_S)
            self.slots.publish(slot_id)
            return slot_id, None
        except (LauncherError, OSError) as exc:
            problems: list[str] = []
            discard_slot(deps, slot, folder, problems)
            return slot_id, "; ".join([str(exc), *problems])

    def _free_uid(self) -> tuple[int, int]:
        """A uid no ready slot, warming slot or live run holds (see ``core.uids``)."""
        taken = {s.uid for s in self.slots.ready()}
        taken |= {w.slot.uid for w in self.slots.warming() if w.slot is not None}
        taken |= {r.uid for r in self.deps.store.list_runs(states=LIVE_RUN_STATES) if r.uid is not None}
        return uids.free_slot_ids(self.deps.defaults, taken)

    # -- looking and draining --------------------------------------------------------------

    def list(self) -> list[SlotView]:
        views = [
            SlotView(
                id=s.id,
                state="ready",
                repo=s.repo,
                project=s.project,
                image=s.image,
                network=s.network,
                base_sha=s.base_sha,
                uid=s.uid,
                container_id=s.container_id,
                created_at=s.created_at.isoformat(),
            )
            for s in self.slots.ready()
        ]
        views += [SlotView(id=w.id, state="warming") for w in self.slots.warming() if w.alive]
        return views

    def drain(self, repo_path: str | None = None) -> DrainReport:
        report = DrainReport()
        for slot in self.slots.ready():
            if repo_path is not None and slot.repo != repo_path:
                continue
            folder = self.slots.claim_for_discard(slot.id)
            if folder is None:
                continue  # a run took it meanwhile
            problems: list[str] = []
            discard_slot(self.deps, slot, folder, problems)
            report.removed.append(slot.id)
            report.errors += [f"{slot.id}: {p}" for p in problems]
        return report

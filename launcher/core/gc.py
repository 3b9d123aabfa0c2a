"""Finding and settling what a launcher that died left behind.

Everything launcher creates carries its run ID (container labels, folder names), so gc works
from the coordinator's records and labels, never from name patterns alone, and removes only
what belongs to this case root. Folders in particular: only those launcher marked as it made
them (``RunDeps.marks``), whatever ``worktrees_dir`` points at.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from functools import partial
from pathlib import Path

from pydantic import BaseModel, Field

from launcher.core import labels
from launcher.core.egress import GC_HOLDER_PREFIX, POOL_HOLDER_PREFIX, SPARE_HOLDER_PREFIX
from launcher.core.ports import RepoPort
from launcher.core.run.deps import RunDeps
from launcher.core.run.pool_take import discard_slot
from launcher.core.run.settle import retire_folder, settle_record
from launcher.core.runlayout import TRASH_PREFIX
from launcher.core.transitions import LIVE_RUN_STATES, TERMINAL_RUN_STATES
from launcher.errors import LauncherError, NotFoundError
from launcher.models import RunOwner, RunRecord

# How long gc waits for runs being taken apart (launcher/core/run/teardown.py) to be done
# before it looks; a teardown that takes longer is left alone this time.
TEARDOWN_WAIT_S = 60.0


class GcAction(BaseModel):
    kind: str
    target: str
    reason: str
    done: bool = False
    error: str | None = None


class GcReport(BaseModel):
    dry_run: bool
    actions: list[GcAction] = Field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [f"{a.kind} {a.target}: {a.error}" for a in self.actions if a.error]


def act(report: GcReport, action: GcAction, do: Callable[[], object]) -> None:
    """Report ``action``; unless this is a dry run, do it, recording whether it worked."""
    report.actions.append(action)
    if report.dry_run:
        return
    try:
        do()
        action.done = True
    except (LauncherError, OSError) as exc:
        action.error = str(exc)


class GarbageCollector:
    def __init__(self, deps: RunDeps, owner_alive: Callable[[RunOwner | None], bool | None]) -> None:
        self.deps = deps
        self.owner_alive = owner_alive
        self._slots_in_service: set[str] = set()

    def collect(self, *, dry_run: bool) -> GcReport:
        report = GcReport(dry_run=dry_run)
        if not dry_run:
            self.deps.teardown_locks.wait(TEARDOWN_WAIT_S)
        self._settle_orphaned_runs(report)
        self._collect_pool(report)
        self._slots_in_service = self._pool_slots_in_service()
        self._remove_stray_containers(report)
        self._remove_stray_folders(report)
        self._release_ports(report)
        if self.deps.egress is not None:
            self._collect_egress(report)
        return report

    def _release_ports(self, report: GcReport) -> None:
        """Host ports whose run has ended or whose launcher died (after its run was settled above,
        and its relay removed with the stray containers: the engine has let the port go)."""
        held: dict[str, list[str]] = {}
        for port, (run_id, name) in sorted(self.deps.store.port_leases().items()):
            held.setdefault(run_id, []).append(f"{name}={port}")
        for run_id, ports in held.items():
            may_go, why = self._settled(run_id)
            if may_go:
                self._act(
                    report,
                    GcAction(kind="release-port", target=f"{', '.join(ports)} ({run_id})", reason=why),
                    partial(self.deps.store.release_ports, run_id),
                )

    # -- warm pool -------------------------------------------------------------------------

    def _pool_slots_in_service(self) -> set[str]:
        """Slots whose container, network and worktree must stay: ready ones, ones a live warmer
        is making, and ones a live run took (the run's settle removes those)."""
        pool = self.deps.pool
        if pool is None:
            return set()
        keep = {slot.id for slot in pool.ready()}
        keep |= {w.id for w in pool.warming() if w.alive}
        for run in self.deps.store.list_runs(states=LIVE_RUN_STATES):
            slot_id = run.details.pool_slot
            if slot_id is not None and self.owner_alive(run.owner) is not False:
                keep.add(slot_id)
        return keep

    def _collect_pool(self, report: GcReport) -> None:
        """Slots whose warmer died, ready slots whose container stopped, and half-drained slots."""
        pool = self.deps.pool
        if pool is None:
            return
        doomed: list[tuple[str, str, bool]] = [(w.id, "its warmer died", True) for w in pool.warming() if not w.alive]
        for slot in pool.ready():
            state = self.deps.sandbox.inspect_state(slot.container_id) if slot.container_id else None
            if not state or not state.get("Running"):
                doomed.append((slot.id, "its container is not running", False))
        for slot_id, why, warming in doomed:
            self._act(
                report,
                GcAction(kind="discard-pool-slot", target=slot_id, reason=why),
                partial(self._discard_slot, slot_id, warming),
            )
        for folder in pool.discarded():
            self._act(
                report,
                GcAction(kind="discard-pool-slot", target=folder.name, reason="a drain or gc stopped halfway"),
                partial(self._discard_folder, folder),
            )

    def _discard_slot(self, slot_id: str, warming: bool) -> None:
        pool = self.deps.pool
        assert pool is not None
        folder = pool.claim_for_discard(slot_id, warming=warming)
        if folder is not None:  # else a run took it meanwhile
            self._discard_folder(folder)

    def _discard_folder(self, folder: Path) -> None:
        pool = self.deps.pool
        assert pool is not None
        slot = pool.read(folder)
        problems: list[str] = []
        if slot is None:
            self.deps.workspace.remove_tree(pool.worktree_of(folder.name))
            self.deps.workspace.remove_tree(folder)
        else:
            discard_slot(self.deps, slot, folder, problems)
        if problems:
            raise LauncherError("; ".join(problems))

    def _act(self, report: GcReport, action: GcAction, do: Callable[[], object]) -> None:
        act(report, action, do)

    def _settle_orphaned_runs(self, report: GcReport) -> None:
        for run in self.deps.store.list_runs(states=LIVE_RUN_STATES):
            if self.owner_alive(run.owner) is not False:
                continue
            owner = f"pid {run.owner.pid} on {run.owner.host}" if run.owner else "no owner"
            self._act(
                report,
                GcAction(
                    kind="settle-run",
                    target=run.id,
                    reason=f"{run.state.value}, but its launcher ({owner}) is gone",
                ),
                partial(self._settle, run),
            )

    def _settle(self, run: RunRecord) -> None:
        settle_record(self.deps, run, "lost", "the launcher that owned this run died")

    def _run_or_none(self, run_id: str | None) -> RunRecord | None:
        if not run_id:
            return None
        try:
            return self.deps.store.get_run(run_id)
        except NotFoundError:
            return None

    def _remove_stray_containers(self, report: GcReport) -> None:
        sandbox = self.deps.sandbox
        for container in sandbox.list({labels.ROOT: str(self.deps.root)}):
            if container.labels.get(labels.KIND) == "egress-proxy":
                continue  # shared by every run of this root: removed below once no run needs it
            slot_id = container.labels.get(labels.POOL_SLOT)
            if slot_id is not None:
                if slot_id not in self._slots_in_service:
                    self._act(
                        report,
                        GcAction(kind="remove-container", target=container.name, reason="its pool slot is gone"),
                        partial(sandbox.remove, container.id),
                    )
                continue
            run = self._run_or_none(container.labels.get(labels.RUN_ID))
            if run is not None and run.state in LIVE_RUN_STATES and self.owner_alive(run.owner) is not False:
                continue
            if run is not None and self.deps.teardown_locks.held(run.id):
                continue  # its teardown removes it
            why = "its run is unknown" if run is None else f"its run is {run.state.value}"
            self._act(
                report,
                GcAction(kind="remove-container", target=container.name, reason=why),
                partial(sandbox.remove, container.id),
            )

    def _remove_stray_folders(self, report: GcReport) -> None:
        """Worktrees, warm slots' worktrees and sandbox folders no live run needs.

        Only folders launcher marked as it made them are looked at (``deps.marks``): whatever
        else is in the worktrees folder, however it is named, is never listed nor removed, and
        a symlink is never a marked folder. A mark whose folder is gone is forgotten quietly.
        """
        marks = self.deps.marks
        sandboxes = self.deps.state_dir / "sandboxes"
        for path in marks.marked():
            sandbox = path.parent == sandboxes
            found = self._marked_folder(path, retired=not sandbox)
            if found is None:
                if not report.dry_run:
                    marks.forget(path)
                continue
            if sandbox:
                self._consider_folder(report, path, found, "sandbox", path.name)
            elif path.parent.name == ".pool":
                self._consider_slot_worktree(report, path, found)
            else:
                self._consider_folder(report, path, found, "worktree", path.name)

    def _marked_folder(self, path: Path, *, retired: bool) -> Path | None:
        """Where the folder launcher made at ``path`` is now: there, or (a worktree, ``retired``)
        in the trash folder a retirement a killed launcher did not finish moved it to; None when
        it is gone."""
        marks = self.deps.marks
        if marks.is_made(path):
            return path
        if path.exists() or path.is_symlink() or not retired:
            return None  # gone, or something else is there now: never launcher's to remove
        prefix = f"{TRASH_PREFIX}{path.name}-"
        for parent in sorted({path.parent, self.deps.worktrees_dir}):
            for candidate in sorted(parent.glob(glob.escape(prefix) + "*")):
                if marks.is_made(path, now_at=candidate):
                    return candidate
        return None

    def _consider_folder(self, report: GcReport, mark: Path, found: Path, kind: str, run_id: str) -> None:
        trashed = found != mark
        if trashed:
            may_go, why = self._settled(run_id)
            if not may_go or run_id in self._slots_in_service:
                return
            self._act(
                report,
                GcAction(kind=f"remove-{kind}", target=str(found), reason=f"left half-deleted; {why}"),
                partial(self._remove_trash, mark, found),
            )
            return
        run = self._run_or_none(run_id)
        if run is not None and (run.state not in TERMINAL_RUN_STATES or self.deps.teardown_locks.held(run.id)):
            return
        if kind == "worktree" and run is not None and run.details.keep_worktree:
            return
        why = "no run owns it" if run is None else f"its run is {run.state.value}"
        self._act(
            report,
            GcAction(kind=f"remove-{kind}", target=str(found), reason=why),
            partial(self._remove_folder, found, run, kind),
        )

    def _consider_slot_worktree(self, report: GcReport, mark: Path, found: Path) -> None:
        slot_id = mark.name
        if slot_id in self._slots_in_service:
            return
        if found != mark:
            self._act(
                report,
                GcAction(kind="remove-worktree", target=str(found), reason="left half-deleted; its pool slot is gone"),
                partial(self._remove_trash, mark, found),
            )
            return
        self._act(
            report,
            GcAction(kind="remove-worktree", target=str(found), reason="its pool slot is gone"),
            partial(self._remove_folder, found, None, "worktree"),
        )

    def _remove_trash(self, mark: Path, trash: Path) -> None:
        """A worktree taken out of its repository whose deletion a killed launcher did not finish."""
        self.deps.workspace.remove_tree(trash)
        self.deps.marks.forget(mark)

    def _settled(self, run_id: str | None) -> tuple[bool, str]:
        """Whether what belongs to ``run_id`` may go, and why."""
        run = self._run_or_none(run_id)
        if run is None:
            return True, "its run is unknown"
        if run.state in LIVE_RUN_STATES and self.owner_alive(run.owner) is not False:
            return False, ""
        if self.deps.teardown_locks.held(run.id):
            return False, ""  # being taken apart now: by its own teardown
        return True, f"its run is {run.state.value}"

    def _collect_egress(self, report: GcReport) -> None:
        egress = self.deps.egress
        assert egress is not None
        # Networks first, then leases: a run leases its subnet before it creates its network, so
        # every network listed here has its lease in the snapshot unless it is being removed.
        networks = egress.networks.networks()
        leases = egress.store.subnet_leases()
        holder_of = {egress.pool.subnet(slot).cidr: holder for slot, holder in leases.items()}
        for network in networks:
            slot_id = network.labels.get(labels.POOL_SLOT)
            if network.labels.get(labels.KIND) == "spare-network":
                self._collect_spare(report, network.name, holder_of.get(network.labels.get(labels.SUBNET, "")))
                continue
            if slot_id is not None:
                may_go, why = slot_id not in self._slots_in_service, "its pool slot is gone"
            else:
                may_go, why = self._settled(network.labels.get(labels.RUN_ID))
            if may_go:
                self._act(
                    report,
                    GcAction(kind="remove-network", target=network.name, reason=why),
                    partial(egress.networks.remove_network, network.name),
                )
        names = {network.name for network in networks}
        for run_id in egress.files.policy_runs():
            may_go, why = self._settled(run_id)
            if may_go:
                self._act(
                    report,
                    GcAction(kind="remove-egress-policy", target=run_id, reason=why),
                    partial(egress.files.remove_policy, run_id),
                )
        for slot, run_id in sorted(egress.store.subnet_leases().items()):
            if run_id.startswith(POOL_HOLDER_PREFIX):
                may_go, why = run_id[len(POOL_HOLDER_PREFIX) :] not in self._slots_in_service, "its pool slot is gone"
            elif run_id.startswith((SPARE_HOLDER_PREFIX, GC_HOLDER_PREFIX)):
                # A spare whose network is gone, or one a gc that died took to remove.
                name = run_id.split(":", 1)[1]
                # Looked at again: a run may have made it a spare since the networks were listed.
                may_go = run_id.startswith(GC_HOLDER_PREFIX) or (
                    name not in names and egress.networks.members(name) is None
                )
                why = "its spare network is gone"
            else:
                may_go, why = self._settled(run_id)
            if may_go:
                self._act(
                    report,
                    GcAction(kind="release-subnet", target=f"{slot} ({run_id})", reason=why),
                    partial(egress.store.release_subnet, run_id),
                )
        if report.dry_run:
            return
        # Last: the proxy goes once no run network is left for it to serve.
        action = GcAction(kind="remove-egress-proxy", target="egress proxy", reason="no run needs it")
        try:
            action.done = egress.networks.remove_proxy_if_idle()
        except LauncherError as exc:
            action.error = str(exc)
        if action.done or action.error:
            report.actions.append(action)

    def _collect_spare(self, report: GcReport, name: str, holder: str | None) -> None:
        """A spare network: in use (its lease a live run's) it stays; waiting, or its run settled,
        or with no lease at all, it goes. A waiting one is taken first (its lease moved to gc, a
        compare-and-set), so a run taking it at that moment keeps it."""
        egress = self.deps.egress
        assert egress is not None
        if holder is not None and not holder.startswith((SPARE_HOLDER_PREFIX, GC_HOLDER_PREFIX)):
            may_go, why = self._settled(holder)
            if may_go:
                self._act(
                    report,
                    GcAction(kind="remove-network", target=name, reason=why),
                    partial(egress.networks.remove_network, name),
                )
            return
        why = "a spare network no run uses" if holder is not None else "a spare network without a subnet lease"

        def take_and_remove() -> None:
            waiting = holder is not None and holder.startswith(SPARE_HOLDER_PREFIX)
            if waiting and not egress.store.transfer_subnet(str(holder), GC_HOLDER_PREFIX + name):
                return  # a run took it meanwhile: it is in use now
            egress.networks.remove_network(name)
            egress.store.release_subnet(GC_HOLDER_PREFIX + name)

        self._act(report, GcAction(kind="remove-network", target=name, reason=why), take_and_remove)

    def _remove_folder(self, path: Path, run: RunRecord | None, kind: str) -> None:
        repo = self.deps.recorded_repo(run) if run is not None and kind == "worktree" else None
        if repo is not None:
            retire_folder(self.deps, repo, path)
            self.deps.marks.forget(path)
            return
        self.deps.workspace.remove_tree(path)
        self.deps.marks.forget(path)
        if kind == "worktree":
            # Whose worktree it was is unknown: every repository forgets it if it knew it.
            for candidate in self._known_repos():
                candidate.prune_worktrees()

    def _known_repos(self) -> list[RepoPort]:
        repos, seen = [], set()
        for task in self.deps.store.list_tasks():
            if task.repo_path and task.repo_path not in seen:
                seen.add(task.repo_path)
                try:
                    repos.append(self.deps.open_repo(task.repo_path))
                except LauncherError:
                    continue
        return repos

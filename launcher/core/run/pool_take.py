"""Taking a warm pool slot: a run that matches one starts without a checkout or a container start."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from launcher.core.egress import RunNetwork
from launcher.core.run.case_scope import is_repo_local
from launcher.core.run.container import agent_env
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import RunPlan
from launcher.core.run.settle import retire_folder
from launcher.core.run.workspace import agent_email, read_task_files, record_snapshot
from launcher.core.runlayout import RunPaths
from launcher.errors import InvalidInputError, LauncherError
from launcher.models import PoolSlot, RunRecord

# What a slot's entry prints once its checkout is done; the run's output starts after it.
POOL_READY_LINE = b"launcher-pool: ready\n"


def start_from_pool(
    deps: RunDeps,
    plan: RunPlan,
    run: RunRecord,
    paths: RunPaths,
    before_go: Callable[[str], None] | None = None,
) -> str | None:
    """Hand a matching ready slot to the run; its container id, or None to start from scratch.

    ``before_go`` gets the slot's container once it is the run's, before it may go on (the
    run's output is attached there, so it starts with the agent's first byte).
    """
    slots = deps.pool
    # A slot's scope is written inside its container; today's case's needs the host (case_scope).
    if slots is None or not plan.pool or is_repo_local(plan.task):
        return None
    for slot in slots.ready():
        if not slot_fits(deps, slot, plan):
            continue
        # The claim is a rename into the run's own sandbox folder: one winner per slot.
        with deps.marks.making(paths.sandbox):
            claimed = slots.claim(slot.id, paths.sandbox)
        if not claimed:
            continue
        deps.checkpoint("after:pool-claim")
        go = slots.open_go(paths.sandbox)
        if go is None:
            # Its container is gone (engine restart, removed by hand): discard, try the next.
            discard_slot(deps, slot, paths.sandbox, [])
            continue
        try:
            hand_over(deps, plan, run, paths, slot)
            if before_go is not None and slot.container_id is not None:
                before_go(slot.container_id)
        except BaseException:
            slots.abandon(go)
            raise
        slots.go(go)
        return slot.container_id
    return None


def slot_fits(deps: RunDeps, slot: PoolSlot, plan: RunPlan) -> bool:
    d = deps.defaults
    wanted = slot.model_copy(
        update={
            "repo": str(plan.repo.toplevel),
            "project": plan.task.repo,
            "image_id": plan.image_id,
            "network": "none" if plan.egress.mode == "none" else "proxied",
            "memory": d.memory,
            "cpus": d.cpus,
            "pids_limit": d.pids_limit,
            "runtime": plan.runtime,
            "tasks_view": deps.tasks_view_mounted(),
        }
    )
    return slot.container_id is not None and slot.shape() == wanted.shape()


def hand_over(deps: RunDeps, plan: RunPlan, run: RunRecord, paths: RunPaths, slot: PoolSlot) -> None:
    """Everything a taken slot needs from the host; the rest its container does itself.

    The slot's container has been running, and the folders it can write may hold whatever
    its image put there (symlinks included), so the host writes nothing into them now:
    the run's branch, identity, .case/ scope and task copy travel in the spec, which sits
    in a folder the container sees read-only.
    """
    store, ws, slots = deps.store, deps.workspace, deps.pool
    assert slots is not None
    # First, so a launcher killed from here on leaves a run whose settle removes the container.
    store.update_run(
        run.id,
        uid=slot.uid,
        container_id=slot.container_id,
        details={"pool_slot": slot.id, "pool_base_sha": slot.base_sha},
    )
    ws.prepare_record(paths)
    with deps.marks.making(paths.worktree):
        plan.repo.adopt_worktree(slots.worktree_of(slot.id), paths.worktree, run.branch, plan.base_sha)
    task, task_json, task_md = read_task_files(deps, plan.task)
    in_view = deps.tasks_view_mounted()
    if not in_view:
        # Not mounted into the container, so the host may write it: the copy the run is judged by.
        ws.write_tasks_view(paths, task.id, task_json, task_md, deps.tasks_dir)
    record_snapshot(deps, run, task)
    network: RunNetwork | None = None
    if slot.network == "proxied":
        egress = deps.egress
        if egress is None or slot.subnet_slot is None:
            raise InvalidInputError(f"pool slot {slot.id} has a network but this launcher has no egress proxy")
        network = egress.slot_network(slot.id, slot.subnet_slot)
        egress.adopt_slot(run, slot.id, network, plan.egress, plan.api_key_values)
    take = {
        "LAUNCHER_TAKE_BRANCH": run.branch,
        "LAUNCHER_TAKE_BASE_BRANCH": plan.base_branch or "",
        "LAUNCHER_TAKE_EMAIL": agent_email(run.id),
        "LAUNCHER_TAKE_TASK": task.id,
        "LAUNCHER_TAKE_TASK_JSON": _text(task_json, "the task file"),
        "LAUNCHER_TAKE_TASK_MD": _text(task_md, "the task's markdown") if task_md is not None else "",
        "LAUNCHER_TAKE_HAS_MD": "1" if task_md is not None else "",
        "LAUNCHER_TAKE_TASKS_VIEW": "1" if in_view else "",
    }
    slots.write_spec(paths.sandbox, agent_env(plan, run, network), take, plan.command, (slot.uid, slot.gid))


def discard_slot(deps: RunDeps, slot: PoolSlot, folder: Path, problems: list[str]) -> None:
    """Remove a slot that no run will use: its container, network, worktree and folder."""
    if slot.container_id:
        try:
            deps.sandbox.remove(slot.container_id)
        except LauncherError as exc:
            problems.append(f"container: {exc}")
    if deps.egress is not None and slot.network == "proxied":
        deps.egress.close_slot(slot.id, problems)
    try:
        repo = deps.open_repo(slot.repo)
    except LauncherError as exc:
        repo = None
        problems.append(f"worktree: {exc}")
    if deps.pool is not None:
        try:
            retire_folder(deps, repo, deps.pool.worktree_of(slot.id))
        except LauncherError as exc:
            problems.append(f"worktree: {exc}")
    deps.workspace.remove_tree(folder)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} is not UTF-8 text, so a pool slot cannot carry it: {exc}") from exc

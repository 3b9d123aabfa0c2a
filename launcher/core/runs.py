"""A run, step by step: claim, workspace, scope, sandbox, harvest, settle.

Every step is recorded in the coordinator before the next begins, so a launcher that dies
anywhere leaves a run that `launcher gc` can find and settle.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from launcher.core.egress import RunEgress, RunNetwork
from launcher.core.harvest import MARKER_NAMES, judge_task_changes, parse_agent_result, parse_marker
from launcher.core.netpolicy import (
    EgressPolicy,
    agent_environment,
    build_policy,
    normalise_mode,
    resolve_key_values,
)
from launcher.core.ports import (
    Coordinator,
    MountSpec,
    PoolSlot,
    PoolSlotsPort,
    RepoPort,
    Sandbox,
    SandboxSpec,
    TaskFilesPort,
    WorkspacePort,
)
from launcher.core.runlayout import (
    CONTAINER_CASE_ROOT,
    CONTAINER_ENTRY,
    CONTAINER_GIT_DIR,
    CONTAINER_HOME,
    CONTAINER_OBJECTS,
    CONTAINER_OUT,
    CONTAINER_WORKTREE,
    PrivateGitSpec,
    RunPaths,
)
from launcher.core.sparse import cone_patterns, normalise_sparse_dirs
from launcher.core.transitions import RunState
from launcher.errors import InvalidInputError, LauncherError, TransitionConflictError
from launcher.models import NewRun, RunOwner, RunRecord, TaskRecord, utcnow
from launcher.settings import NetworkSettings, RunDefaults

BUNDLE_MAX_BYTES = 512 * 1024 * 1024
POOL_READY_LINE = b"launcher-pool: ready\n"
MARKER_MAX_BYTES = 256 * 1024
TASK_COPY_MAX_BYTES = 4 * 1024 * 1024
LOG_SCAN_MAX_BYTES = 16 * 1024 * 1024
HARVEST_TIMEOUT_S = 300.0
Ending = Literal["exited", "failed", "timed-out", "cancelled"]


class RunRequest(BaseModel):
    """What a caller asks for; unset fields fall back to the task, then to launcher.toml."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: str
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    timeout: float | None = Field(default=None, gt=0)
    keep_worktree: bool | None = None
    network: Literal["none", "allowlist", "open", "bridge"] | None = None
    allow: list[str] = Field(default_factory=list, description="HOST, *.SUFFIX or HOST:PORT")
    presets: list[str] = Field(default_factory=list, description="named host lists")
    api_keys: list[str] = Field(default_factory=list, description="NAME=UPSTREAM; the proxy holds the key")
    secrets: list[str] = Field(default_factory=list, description="NAME (host env) or NAME=FILE")
    runtime: str | None = None
    pool: bool = Field(default=True, description="take a matching warm pool slot when one is ready")
    sparse: list[str] = Field(default_factory=list, description="check out only these folders (git cone mode)")


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


@dataclass
class RunEnvironment:
    """The adapters a run needs, and where this case root keeps things."""

    store: Coordinator
    files: TaskFilesPort
    sandbox: Sandbox
    workspace: WorkspacePort
    open_repo: Callable[[str], RepoPort]
    root: Path
    state_dir: Path
    worktrees_dir: Path
    tasks_dir: Path
    defaults: RunDefaults
    entry_script: Path
    actor: str = "launcher"
    projects_view: Callable[[str, str], bytes | None] | None = None
    # Called before and after every step ("before:workspace", "after:start", …); tests
    # inject faults or kill the process there. Inert in normal use.
    checkpoint: Callable[[str], None] = lambda _step: None
    # Where a task's repository is on this machine: projects.json (relative to this root)
    # wins over the absolute path recorded at creation, so a harness checked out elsewhere
    # (a CI runner, a build box) still finds its repositories.
    locate_repo: Callable[[TaskRecord], str | None] = lambda task: task.repo_path
    network: NetworkSettings = field(default_factory=NetworkSettings)
    # None where no Docker engine backs the runs; then only --network none can run.
    egress: RunEgress | None = None
    # Warm pool slots (`launcher pool warm`); None: every run is made from scratch.
    pool: PoolSlotsPort | None = None


def resolve_secrets(names: list[str], environ: dict[str, str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in names:
        name, sep, source = item.partition("=")
        if not name.isidentifier():
            raise InvalidInputError(f"--secret {item!r}: a secret needs a variable name (NAME or NAME=FILE)")
        if sep:
            try:
                secrets[name] = Path(source).read_text(encoding="utf-8").rstrip("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"--secret {name}: cannot read {source}: {exc}") from exc
        elif name in environ:
            secrets[name] = environ[name]
        else:
            raise InvalidInputError(f"--secret {name}: no such variable in launcher's environment")
    return secrets


class Redactor:
    """Replaces secret values in log output; works line by line so a split value is still caught."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self._values = sorted((v.encode() for v in secrets.values() if len(v) >= 4), key=len, reverse=True)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._values:
            return chunk
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return self._scrub(data[:cut])

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        return self._scrub(data)

    def _scrub(self, data: bytes) -> bytes:
        for value in self._values:
            data = data.replace(value, b"***")
        return data


class RunService:
    def __init__(self, env: RunEnvironment) -> None:
        self.env = env

    # -- planning: everything that can be refused is refused before anything is created --

    def plan(self, request: RunRequest, environ: dict[str, str]) -> RunPlan:
        d = self.env.defaults
        task = self.env.store.resolve_task(request.task)
        command = list(request.command or task.command or d.command)
        if not command:
            raise InvalidInputError(
                f"task {task.id} has no agent command",
                hint="pass one after `--`, store one with `task create … -- CMD`, or set [run].command",
            )
        image = request.image or task.image or d.image
        image_id = self.env.sandbox.image_id(image)
        repo_path = self.env.locate_repo(task)
        if not repo_path:
            raise InvalidInputError(
                f"task {task.id} names no repository on this machine",
                hint=f"add {task.repo!r} to projects.json, or create the task with --repo PATH",
            )
        repo = self.env.open_repo(repo_path)
        if (repo.objects_dir / "info" / "alternates").exists():
            raise InvalidInputError(
                f"{repo.toplevel} borrows objects from another repository (objects/info/alternates)",
                hint="launcher mounts only this repository's objects; `git repack -a -d` makes it self-contained",
            )
        base_sha = repo.resolve_commit(task.base_ref)
        sparse = normalise_sparse_dirs(request.sparse)
        for folder in sparse:
            if not repo.is_folder(base_sha, folder):
                raise InvalidInputError(f"--sparse {folder}: no such folder at {task.base_ref} ({base_sha[:12]})")
        keep = d.keep_worktree if request.keep_worktree is None else request.keep_worktree
        if sparse and keep:
            raise InvalidInputError(
                "--sparse and --keep-worktree do not go together: a kept worktree is a full checkout of the branch",
                hint="the branch holds the run's commits either way; check it out where you need it",
            )
        egress = self._egress_policy(request)
        if egress.mode != "none":
            if self.env.egress is None:
                raise InvalidInputError("this launcher has no egress proxy; run with --network none")
            self.env.egress.check()
        return RunPlan(
            task=task,
            repo=repo,
            image=image,
            image_id=image_id,
            command=command,
            timeout=request.timeout or d.timeout,
            keep_worktree=keep,
            egress=egress,
            runtime=request.runtime or d.runtime,
            base_sha=base_sha,
            base_branch=repo.symbolic_branch(task.base_ref),
            secrets=resolve_secrets(request.secrets, environ),
            api_key_values=resolve_key_values(egress, environ),
            # Slots are full checkouts: a sparse run is made from scratch.
            pool=request.pool and not sparse,
            sparse=sparse,
        )

    def _egress_policy(self, request: RunRequest) -> EgressPolicy:
        configured = self.env.network
        mode = normalise_mode(request.network or self.env.defaults.network or configured.mode)
        if mode == "none":
            # launcher.toml's hosts do not apply; hosts named for this run would be silently lost.
            return build_policy(mode, request.allow, request.presets, request.api_keys, configured.preset)
        return build_policy(
            mode,
            [*configured.allow, *request.allow],
            [*configured.presets, *request.presets],
            request.api_keys,
            configured.preset,
        )

    def create(self, plan: RunPlan, owner: RunOwner) -> RunRecord:
        self.env.checkpoint("before:claim")
        run = self.env.store.create_run(
            NewRun(task_id=plan.task.id, image=plan.image, owner=owner, worktrees_dir=str(self.env.worktrees_dir))
        )
        uid = self._uid(run.seq)
        self.env.checkpoint("after:claim")
        return self.env.store.update_run(
            run.id,
            uid=uid[0],
            details={
                "base_sha": plan.base_sha,
                "base_branch": plan.base_branch,
                "command": plan.command,
                "network": plan.egress.describe(),
                "timeout": plan.timeout,
                "keep_worktree": plan.keep_worktree,
                "sparse": plan.sparse,
                "secrets": sorted(plan.secrets),
                "repo": str(plan.repo.toplevel),
                "log": str(self.paths(run).log),
            },
        )

    def _uid(self, seq: int) -> tuple[int, int]:
        if os.geteuid() != 0:
            # Unprivileged launcher: it cannot hand files to other uids, so runs share its own.
            return os.getuid(), os.getgid()
        d = self.env.defaults
        uid = d.uid_base + seq % d.uid_span
        return uid, uid

    def paths(self, run: RunRecord) -> RunPaths:
        return RunPaths.of(run.id, Path(run.worktree), self.env.state_dir)

    # -- executing --------------------------------------------------------------------------

    def execute(self, plan: RunPlan, run: RunRecord, echo: Callable[[bytes], None] | None = None) -> RunRecord:
        store, paths = self.env.store, self.paths(run)
        uid, gid = self._uid(run.seq)
        container_id: str | None = None
        ending: Ending = "failed"
        exit_code: int | None = None
        error: str | None = None
        infrastructure = False
        step = self.env.checkpoint
        skip_through: bytes | None = None
        try:
            run = store.update_run(run.id, expected=[RunState.CREATED], state=RunState.PREPARING)
            container_id = self._start_from_pool(plan, run, paths)
            if container_id is not None:
                skip_through = POOL_READY_LINE
            else:
                # The network (Docker round trips) is made while the worktree is checked out (git).
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"network-{run.id}") as pool:
                    network_made = pool.submit(self._open_network, plan, run)
                    self._prepare(plan, run, paths, uid, gid)
                    network = network_made.result()
                step("before:create")
                container_id = self.env.sandbox.create(self._spec(plan, run, paths, uid, gid, network))
                run = store.update_run(run.id, container_id=container_id)
                step("after:create")
                self.env.sandbox.start(container_id)
            run = store.update_run(run.id, expected=[RunState.PREPARING], state=RunState.RUNNING, started_at=utcnow())
            step("after:start")
            ending, exit_code = self._supervise(run, container_id, plan, paths, echo, skip_through)
            step("after:wait")
        except KeyboardInterrupt:
            ending, error = "cancelled", "interrupted (Ctrl-C)"
            if container_id:
                self.env.sandbox.kill(container_id)
        except LauncherError as exc:
            ending, error = "failed", str(exc)
            infrastructure = _is_infrastructure(exc)
            if container_id:
                self.env.sandbox.kill(container_id)
        return self.settle(
            plan.repo,
            run,
            paths,
            ending,
            exit_code,
            error,
            keep=plan.keep_worktree,
            image=plan.image,
            infrastructure=infrastructure,
        )

    def _prepare(self, plan: RunPlan, run: RunRecord, paths: RunPaths, uid: int, gid: int) -> None:
        ws, task, step = self.env.workspace, plan.task, self.env.checkpoint
        owner_uid, owner_gid = plan.repo.owner_ids
        ws.prepare_record(paths)
        step("before:workspace")
        ws.prepare_worktree_dir(paths.worktree, owner_uid, owner_gid)
        plan.repo.add_worktree(paths.worktree, run.branch, plan.base_sha)
        step("after:workspace")
        paths.sandbox.mkdir(parents=True)
        ws.write_private_git_dir(
            paths,
            PrivateGitSpec(
                branch=run.branch,
                base_sha=plan.base_sha,
                base_branch=plan.base_branch,
                object_format=plan.repo.config_get("extensions.objectformat"),
                user_name="launcher agent",
                user_email=f"{run.id}@launcher.invalid",
                sparse_patterns=cone_patterns(plan.sparse) if plan.sparse else None,
            ),
        )
        self._write_task_scope(task, run, paths)
        self.give_to_uid(paths, plan.repo, uid, gid)

    def give_to_uid(self, paths: RunPaths, repo: RepoPort, uid: int, gid: int) -> None:
        """Everything a run's container writes becomes its uid's (a run's, or a warm slot's)."""
        ws = self.env.workspace
        for top in (paths.worktree, paths.git_dir, paths.out_dir, paths.tasks_view, paths.dotgit):
            ws.chown_tree(top, uid, gid)
        # The worktree's real .git file stays the repository owner's: it is hidden from the run.
        ws.chown_tree(paths.worktree / ".git", *repo.owner_ids)

    # -- warm pool: a slot checked out and started ahead of time ----------------------------

    def _start_from_pool(self, plan: RunPlan, run: RunRecord, paths: RunPaths) -> str | None:
        """Hand a matching ready slot to the run; its container id, or None to start from scratch."""
        slots = self.env.pool
        if slots is None or not plan.pool:
            return None
        for slot in slots.ready():
            if not self._slot_fits(slot, plan):
                continue
            # The claim is a rename into the run's own sandbox folder: one winner per slot.
            if not slots.claim(slot.id, paths.sandbox):
                continue
            self.env.checkpoint("after:pool-claim")
            go = slots.open_go(paths.sandbox)
            if go is None:
                # Its container is gone (engine restart, removed by hand): discard, try the next.
                self.discard_slot(slot, paths.sandbox, [])
                continue
            try:
                self._hand_over(plan, run, paths, slot)
            except BaseException:
                slots.abandon(go)
                raise
            slots.go(go)
            return slot.container_id
        return None

    def _slot_fits(self, slot: PoolSlot, plan: RunPlan) -> bool:
        d = self.env.defaults
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
                "tasks_view": self.tasks_view_mounted(),
            }
        )
        return slot.container_id is not None and slot.shape() == wanted.shape()

    def _hand_over(self, plan: RunPlan, run: RunRecord, paths: RunPaths, slot: PoolSlot) -> None:
        """Everything a taken slot needs from the host; the rest its container does itself.

        The slot's container has been running, and the folders it can write may hold whatever
        its image put there (symlinks included), so the host writes nothing into them now:
        the run's branch, identity, .case/ scope and task copy travel in the spec, which sits
        in a folder the container sees read-only.
        """
        store, ws, slots, task = self.env.store, self.env.workspace, self.env.pool, plan.task
        assert slots is not None
        # First, so a launcher killed from here on leaves a run whose settle removes the container.
        store.update_run(
            run.id,
            uid=slot.uid,
            container_id=slot.container_id,
            details={"pool_slot": slot.id, "pool_base_sha": slot.base_sha},
        )
        ws.prepare_record(paths)
        plan.repo.adopt_worktree(slots.worktree_of(slot.id), paths.worktree, run.branch, plan.base_sha)
        task = self.env.files.sync(task.id)
        task_json = self.env.files.json_path(task).read_bytes()
        md_path = self.env.files.md_path(task)
        task_md = md_path.read_bytes() if md_path.exists() else None
        in_view = self.tasks_view_mounted()
        if not in_view:
            # Not mounted into the container, so the host may write it: the copy the run is judged by.
            ws.write_tasks_view(paths, task.id, task_json, task_md, self.env.tasks_dir)
        store.update_run(run.id, details={"task_snapshot": task.doc, "task_version": task.version})
        network: RunNetwork | None = None
        if slot.network == "proxied":
            egress = self.env.egress
            if egress is None or slot.subnet_slot is None:
                raise InvalidInputError(f"pool slot {slot.id} has a network but this launcher has no egress proxy")
            network = egress.slot_network(slot.id, slot.subnet_slot)
            egress.adopt_slot(run, slot.id, network, plan.egress, plan.api_key_values)
        take = {
            "LAUNCHER_TAKE_BRANCH": run.branch,
            "LAUNCHER_TAKE_BASE_BRANCH": plan.base_branch or "",
            "LAUNCHER_TAKE_EMAIL": f"{run.id}@launcher.invalid",
            "LAUNCHER_TAKE_TASK": task.id,
            "LAUNCHER_TAKE_TASK_JSON": _text(task_json, "the task file"),
            "LAUNCHER_TAKE_TASK_MD": _text(task_md, "the task's markdown") if task_md is not None else "",
            "LAUNCHER_TAKE_HAS_MD": "1" if task_md is not None else "",
            "LAUNCHER_TAKE_TASKS_VIEW": "1" if in_view else "",
        }
        slots.write_spec(paths.sandbox, self.run_env(plan, run, network), take, plan.command, (slot.uid, slot.gid))

    def discard_slot(self, slot: PoolSlot, folder: Path, problems: list[str]) -> None:
        """Remove a slot that no run will use: its container, network, worktree and folder."""
        if slot.container_id:
            try:
                self.env.sandbox.remove(slot.container_id)
            except LauncherError as exc:
                problems.append(f"container: {exc}")
        if self.env.egress is not None and slot.network == "proxied":
            self.env.egress.close_slot(slot.id, problems)
        pool = self.env.pool
        if pool is not None:
            self.env.workspace.remove_tree(pool.worktree_of(slot.id))
        try:
            self.env.open_repo(slot.repo).prune_worktrees()
        except LauncherError as exc:
            problems.append(f"worktree: {exc}")
        self.env.workspace.remove_tree(folder)

    def _write_task_scope(self, task: TaskRecord, run: RunRecord, paths: RunPaths) -> None:
        """The run's copy of its task files and its .case/ scope, and the snapshot it is judged against."""
        ws, step = self.env.workspace, self.env.checkpoint
        task = self.env.files.sync(task.id)
        task_json = self.env.files.json_path(task).read_bytes()
        md_path = self.env.files.md_path(task)
        task_md = md_path.read_bytes() if md_path.exists() else None
        step("before:scope")
        ws.write_tasks_view(paths, task.id, task_json, task_md, self.env.tasks_dir)
        ws.write_case_scope(paths.worktree, task.id, task_json)
        step("after:scope")
        self.env.store.update_run(run.id, details={"task_snapshot": task.doc, "task_version": task.version})

    def _open_network(self, plan: RunPlan, run: RunRecord) -> RunNetwork | None:
        if plan.egress.mode == "none" or self.env.egress is None:
            return None
        self.env.checkpoint("before:network")
        network = self.env.egress.open(run, plan.egress, plan.api_key_values)
        self.env.checkpoint("after:network")
        return network

    def _spec(
        self, plan: RunPlan, run: RunRecord, paths: RunPaths, uid: int, gid: int, network: RunNetwork | None
    ) -> SandboxSpec:
        return self.container_spec(
            repo=plan.repo,
            project=plan.task.repo,
            image=plan.image,
            runtime=plan.runtime,
            paths=paths,
            uid=uid,
            gid=gid,
            network=network,
            name=f"launcher-{run.id}-{root_tag(self.env.root)}",
            labels=run_labels(self.env.root, run),
            command=plan.command,
            env=self.run_env(plan, run, network),
        )

    def run_env(self, plan: RunPlan, run: RunRecord, network: RunNetwork | None) -> dict[str, str]:
        """The run's facts, secrets and proxy settings, as the agent sees them."""
        task = plan.task
        git_config = [("safe.directory", CONTAINER_WORKTREE)]
        env = {
            "CASE_ROOT": CONTAINER_CASE_ROOT,
            "CASE_TASK_ID": task.id,
            "CASE_TASK_SLUG": task.slug,
            "CASE_RUN_ID": run.id,
            "CASE_BRANCH": run.branch,
            "CASE_WORKTREE": CONTAINER_WORKTREE,
            "CASE_BASE_SHA": plan.base_sha,
            "LAUNCHER_BASE_SHA": plan.base_sha,
            "HOME": CONTAINER_HOME,
            **plan.secrets,
        }
        if network is not None:
            proxy_env, forge_rewrites = agent_environment(plan.egress, network.subnet.proxy_ip)
            env.update(proxy_env)
            git_config += forge_rewrites
        # The worktree belongs to the run's uid, so git's ownership check passes anyway;
        # safe.directory only covers images whose git resolves the path differently.
        env.update(git_config_env(git_config))
        return env

    def container_spec(
        self,
        *,
        repo: RepoPort,
        project: str,
        image: str,
        runtime: str | None,
        paths: RunPaths,
        uid: int,
        gid: int,
        network: RunNetwork | None,
        name: str,
        labels: dict[str, str],
        command: list[str],
        env: dict[str, str],
        extra_mounts: tuple[MountSpec, ...] = (),
    ) -> SandboxSpec:
        """A container on a run's layout; a warm pool slot uses it with the slot's own layout."""
        mounts = [
            MountSpec(target=CONTAINER_WORKTREE, source=str(paths.worktree)),
            MountSpec(target=f"{CONTAINER_WORKTREE}/.git", source=str(paths.dotgit), read_only=True),
            MountSpec(target=CONTAINER_GIT_DIR, source=str(paths.git_dir)),
            MountSpec(target=CONTAINER_OBJECTS, source=str(repo.objects_dir), read_only=True),
            MountSpec(target=CONTAINER_OUT, source=str(paths.out_dir)),
            MountSpec(target=CONTAINER_ENTRY, source=str(self.env.entry_script), read_only=True),
            *self._harness_mounts(repo, project, paths),
            *extra_mounts,
        ]
        if network is not None:
            # Names never resolve inside a run (the proxy resolves them): a resolver where nothing
            # listens makes lookups fail at once instead of after the usual seconds of retries.
            resolv = paths.sandbox / "resolv.conf"
            resolv.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            mounts.append(MountSpec(target="/etc/resolv.conf", source=str(resolv), read_only=True))
        d = self.env.defaults
        return SandboxSpec(
            image=image,
            name=name,
            command=command,
            entrypoint=["/bin/sh", CONTAINER_ENTRY],
            env=env,
            user=f"{uid}:{gid}",
            workdir=CONTAINER_WORKTREE,
            labels=labels,
            mounts=mounts,
            writable_tmp=["/tmp", CONTAINER_HOME],
            network=network.name if network is not None else "none",
            memory=d.memory,
            cpus=d.cpus,
            pids_limit=d.pids_limit,
            runtime=runtime,
        )

    def _harness_mounts(self, repo: RepoPort, project: str, paths: RunPaths) -> list[MountSpec]:
        """The case root read-only at /case, minus everything that is not this run's to see."""
        root = self.env.root
        mounts = [MountSpec(target=CONTAINER_CASE_ROOT, source=str(root), read_only=True)]
        hidden = {self.env.state_dir, self.env.worktrees_dir, repo.git_dir}
        for path in sorted(hidden):
            if path.is_relative_to(root) and path != root and path.exists():
                rel = path.relative_to(root)
                if not any(
                    rel.is_relative_to(h.relative_to(root)) and h != path for h in hidden if h.is_relative_to(root)
                ):
                    mounts.append(
                        MountSpec(
                            target=f"{CONTAINER_CASE_ROOT}/{rel}",
                            kind="tmpfs",
                            read_only=True,
                            tmpfs_size=4096,
                            tmpfs_mode=0o755,
                        )
                    )
        view = self.env.projects_view(project, "../workspace") if self.env.projects_view else None
        if view is not None and (root / "projects.json").is_file():
            # case's orchestrator finds the repository through projects.json: point it at the run.
            (paths.sandbox / "projects.json").write_bytes(view)
            mounts.append(
                MountSpec(
                    target=f"{CONTAINER_CASE_ROOT}/projects.json",
                    source=str(paths.sandbox / "projects.json"),
                    read_only=True,
                )
            )
        tasks = self.env.tasks_dir
        if self.tasks_view_mounted():
            # Only the run's own task files, writable, so case's scripts work on the run's copy.
            mounts.append(
                MountSpec(target=f"{CONTAINER_CASE_ROOT}/{tasks.relative_to(root)}", source=str(paths.tasks_view))
            )
        return mounts

    def tasks_view_mounted(self) -> bool:
        return self.env.tasks_dir.is_relative_to(self.env.root) and self.env.tasks_dir.is_dir()

    def _supervise(
        self,
        run: RunRecord,
        container_id: str,
        plan: RunPlan,
        paths: RunPaths,
        echo: Callable[[bytes], None] | None,
        skip_through: bytes | None = None,
    ) -> tuple[Ending, int | None]:
        redactor = Redactor({**plan.secrets, **plan.api_key_values})
        pump = LogPump(self.env.sandbox, container_id, paths.log, redactor, echo, skip_through)
        pump.start()
        try:
            code = self.env.sandbox.wait(container_id, plan.timeout)
            ending: Ending
            if code is None:
                self.env.sandbox.kill(container_id)
                code = self.env.sandbox.wait(container_id, 60)
                ending = "timed-out"
            else:
                ending = "exited" if code == 0 else "failed"
            state = self.env.sandbox.inspect_state(container_id) or {}
            if state.get("OOMKilled"):
                # Recorded, not retried: the agent outgrew its memory limit.
                self.env.store.update_run(
                    run.id, details={"oom_killed": True, "memory_limit": self.env.defaults.memory}
                )
            if self.env.store.get_run(run.id).cancel_requested:
                ending = "cancelled"
            return ending, code
        finally:
            pump.join(timeout=30)

    # -- harvesting and settling ---------------------------------------------------------

    def settle_record(self, run: RunRecord, ending: Ending | Literal["lost"], reason: str | None) -> RunRecord:
        """Settle a run from its record alone (its launcher is gone): gc, stop, a batch taking over."""
        repo: RepoPort | None = None
        repo_path = run.details.get("repo")
        if isinstance(repo_path, str):
            try:
                repo = self.env.open_repo(repo_path)
            except LauncherError:
                repo = None  # the repository moved or vanished: still remove what can be removed
        return self.settle(
            repo,
            run,
            self.paths(run),
            ending,
            None,
            reason,
            keep=bool(run.details.get("keep_worktree")),
            image=run.image,
        )

    def settle(
        self,
        repo: RepoPort | None,
        run: RunRecord,
        paths: RunPaths,
        ending: Ending | Literal["lost"],
        exit_code: int | None,
        error: str | None,
        *,
        keep: bool,
        image: str | None,
        infrastructure: bool = False,
    ) -> RunRecord:
        """Harvest what the run made, remove its container and folders, record the end state.

        Collects every problem instead of stopping at the first: a failed harvest must not
        leave a container or a worktree behind.
        """
        problems: list[str] = [error] if error else []
        details: dict[str, Any] = {"infrastructure_failure": infrastructure}
        step = self.env.checkpoint
        sandbox = self.env.sandbox
        current = self.env.store.get_run(run.id)
        if current.container_id:
            try:
                sandbox.kill(current.container_id)
                sandbox.remove(current.container_id)
            except LauncherError as exc:
                problems.append(f"container cleanup: {exc}")
        # The network comes down (Docker round trips) while the harvest runs (git).
        egress_closed = None
        if self.env.egress is not None:
            pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"egress-{run.id}")
            egress_closed = pool.submit(self.env.egress.close, current, paths.record / "egress.jsonl", problems)
            pool.shutdown(wait=False)
        step("before:harvest")
        if repo is not None and paths.git_dir.exists():
            try:
                details["harvest"] = self._harvest(repo, current, paths, ending, image)
            except LauncherError as exc:
                problems.append(f"harvest: {exc}")
                details["harvest"] = {"error": str(exc)}
        step("before:transition")
        try:
            details["task_changes"] = self._apply_task_changes(current, paths)
        except LauncherError as exc:
            problems.append(f"task changes: {exc}")
        details["agent_result"] = self._agent_result(paths)
        if egress_closed is not None:
            summary = egress_closed.result()
            if summary is not None:
                details["egress"] = {**current.details.get("egress", {}), **summary.model_dump()}
        step("before:cleanup")
        try:
            harvest = details.get("harvest") or {}
            self._clean_folders(repo, current, paths, keep, tip=harvest.get("tip"))
        except (LauncherError, OSError) as exc:
            problems.append(f"cleanup: {exc}")
        step("after:cleanup")
        if problems:
            details["errors"] = problems
        state = RunState(ending)
        try:
            return self.env.store.update_run(
                run.id,
                expected=[RunState.CREATED, RunState.PREPARING, RunState.RUNNING],
                state=state,
                exit_code=exit_code,
                ended_at=utcnow(),
                details=details,
                detail=problems[0] if problems else None,
            )
        except TransitionConflictError:
            # Someone (gc, stop) settled it first; keep their verdict, add what we learnt.
            return self.env.store.update_run(run.id, details=details)

    def _harvest(
        self, repo: RepoPort, run: RunRecord, paths: RunPaths, ending: str, image: str | None
    ) -> dict[str, Any]:
        base = str(run.details.get("base_sha", ""))
        # A harvest container only if the agent's container existed: one that never started
        # made no commits, and a second failing create would only repeat the failure.
        if not paths.bundle.exists() and ending != "exited" and image and run.container_id:
            self._harvest_container(repo, run, paths, image)
        copied = self.env.workspace.copy_bundle_out(paths, max_bytes=BUNDLE_MAX_BYTES)
        if copied is None:
            return {"commits": [], "tip": base, "diff": {"files_changed": 0, "insertions": 0, "deletions": 0}}
        heads = repo.verify_bundle(copied)
        if [ref for _, ref in heads] != ["HEAD"]:
            raise InvalidInputError(f"the run's bundle must carry HEAD only, it carries {[r for _, r in heads]}")
        staging = f"refs/launcher/staging/{run.id}"
        try:
            tip = repo.fetch_bundle_head(copied, staging)
            if not repo.is_ancestor(base, tip):
                raise InvalidInputError(
                    f"the run's HEAD {tip[:12]} does not descend from its base {base[:12]}; "
                    "the branch stays at the base"
                )
            # Idempotent: a settle repeated after a crash finds the branch already moved.
            if repo.ref_value(f"refs/heads/{run.branch}") != tip:
                repo.update_ref(f"refs/heads/{run.branch}", tip, base)
        finally:
            repo.delete_ref(staging)
        diff = repo.diff_summary(base, tip)
        files = diff.get("files", [])
        result: dict[str, Any] = {"commits": repo.commits_between(base, tip), "tip": tip, "diff": diff}
        if isinstance(files, list) and any(str(f).startswith(".case/") for f in files):
            result["warnings"] = [".case/ files were committed; they belong to the run's scope, not the branch"]
        return result

    def _harvest_container(self, repo: RepoPort, run: RunRecord, paths: RunPaths, image: str) -> None:
        """The agent was killed before it could bundle its commits: a short container does it."""
        if run.uid is None:
            return
        plan_like = SandboxSpec(
            image=image,
            name=f"launcher-{run.id}-harvest-{root_tag(self.env.root)}",
            command=[],
            entrypoint=["/bin/sh", CONTAINER_ENTRY],
            env={
                "LAUNCHER_PHASE": "harvest",
                "LAUNCHER_BASE_SHA": str(run.details.get("base_sha", "")),
                "HOME": CONTAINER_HOME,
                **git_config_env([("safe.directory", CONTAINER_WORKTREE)]),
            },
            user=f"{run.uid}:{run.uid if os.geteuid() == 0 else os.getgid()}",
            workdir=CONTAINER_WORKTREE,
            labels={**run_labels(self.env.root, run), "launcher.kind": "harvest"},
            mounts=[
                MountSpec(target=CONTAINER_WORKTREE, source=str(paths.worktree)),
                MountSpec(target=f"{CONTAINER_WORKTREE}/.git", source=str(paths.dotgit), read_only=True),
                MountSpec(target=CONTAINER_GIT_DIR, source=str(paths.git_dir)),
                MountSpec(target=CONTAINER_OBJECTS, source=str(repo.objects_dir), read_only=True),
                MountSpec(target=CONTAINER_OUT, source=str(paths.out_dir)),
                MountSpec(target=CONTAINER_ENTRY, source=str(self.env.entry_script), read_only=True),
            ],
            writable_tmp=["/tmp", CONTAINER_HOME],
            network="none",
            memory=self.env.defaults.memory,
            cpus=self.env.defaults.cpus,
            pids_limit=self.env.defaults.pids_limit,
        )
        sandbox = self.env.sandbox
        container_id = sandbox.create(plan_like)
        try:
            sandbox.start(container_id)
            if sandbox.wait(container_id, HARVEST_TIMEOUT_S) is None:
                sandbox.kill(container_id)
        finally:
            sandbox.remove(container_id)

    def _apply_task_changes(self, run: RunRecord, paths: RunPaths) -> dict[str, Any] | None:
        snapshot = run.details.get("task_snapshot")
        if not isinstance(snapshot, dict):
            return None
        raw = self.env.workspace.read_in(
            paths.sandbox, ["tasks", "active", f"{run.task_id}.task.json"], max_bytes=TASK_COPY_MAX_BYTES
        )
        if raw is None:
            return {"refused": ["the run's task file copy is missing"]}
        try:
            requested = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return {"refused": [f"the run's task file copy is not valid JSON: {exc}"]}
        if not isinstance(requested, dict):
            return {"refused": ["the run's task file copy is not a JSON object"]}
        markers = self._markers(run, paths)
        updates, target, report = judge_task_changes(snapshot, requested, markers)
        store, actor = self.env.store, f"run:{run.id}"
        if updates:
            current = store.get_task(run.task_id)
            doc = {**current.doc, **updates}
            try:
                store.update_task_doc(run.task_id, current.version, doc, actor=actor)
            except TransitionConflictError as exc:
                report.refused.append(f"fields not applied: {exc}")
                report.applied_fields = []
        if target is not None:
            try:
                _, transition = store.transition(
                    run.task_id,
                    type(target)(snapshot["status"]),
                    target,
                    reason=f"requested by run {run.id}",
                    actor=actor,
                )
                report.applied_status = target.value
                self.env.files.record_transition(run.task_id, transition)
            except LauncherError as exc:
                report.refused.append(f"status: {exc.message}")
        if updates and target is None:
            self.env.files.sync(run.task_id)
        data = report.model_dump(mode="json")
        data["markers"] = markers
        return data

    def _markers(self, run: RunRecord, paths: RunPaths) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for name in MARKER_NAMES:
            try:
                raw = self.env.workspace.read_in(
                    paths.worktree, [".case", run.task_id, name], max_bytes=MARKER_MAX_BYTES
                )
            except LauncherError:
                continue
            if raw is not None:
                fields = parse_marker(raw)
                if raw:
                    fields.setdefault("sha256", hashlib.sha256(raw).hexdigest())
                found[name] = fields
        return found

    def _agent_result(self, paths: RunPaths) -> dict[str, Any]:
        try:
            with open(paths.log, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                size = handle.tell()
                handle.seek(max(0, size - LOG_SCAN_MAX_BYTES))
                data = handle.read()
        except OSError:
            return {"state": "missing"}
        return parse_agent_result(data).model_dump(mode="json", exclude_none=True)

    def _clean_folders(
        self, repo: RepoPort | None, run: RunRecord, paths: RunPaths, keep: bool, *, tip: str | None
    ) -> None:
        ws = self.env.workspace
        if keep and repo is not None and paths.worktree.exists():
            # The run's scope moves to its host-only record: the markers stay inspectable and
            # the kept worktree is a clean checkout of the branch (.case/ was only excluded
            # by the run's private git dir, which the host's git does not read).
            ws.move_out(paths.worktree / ".case", paths.record / "case-scope")
            owner_uid, owner_gid = repo.owner_ids
            ws.chown_tree(paths.worktree, owner_uid, owner_gid)
            admin = repo.worktree_admin(paths.worktree)
            if admin is not None and admin.is_dir():
                repo.read_tree_into_worktree_index(admin, str(tip or run.details.get("base_sha")))
        else:
            ws.remove_tree(paths.worktree)
            if repo is not None:
                repo.prune_worktrees()
        ws.remove_tree(paths.sandbox)


class LogPump(threading.Thread):
    """Copies a container's output to the run's log file (and the terminal) as it comes."""

    def __init__(
        self,
        sandbox: Sandbox,
        container_id: str,
        log_path: Path,
        redactor: Redactor,
        echo: Callable[[bytes], None] | None,
        skip_through: bytes | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"logs-{container_id[:12]}")
        self.sandbox, self.container_id, self.log_path = sandbox, container_id, log_path
        self.redactor, self.echo = redactor, echo
        # A pool slot's container printed its readiness before the run took it: not the run's output.
        self.skip_through = skip_through

    def run(self) -> None:
        with open(self.log_path, "ab") as log:
            held = b""
            try:
                for chunk in self.sandbox.logs(self.container_id):
                    if self.skip_through is not None:
                        held += chunk
                        cut = held.find(self.skip_through)
                        if cut < 0:
                            continue
                        chunk, held, self.skip_through = held[cut + len(self.skip_through) :], b"", None
                    self._emit(log, self.redactor.feed(chunk))
            except Exception as exc:  # a broken log stream must not kill the run
                self._emit(log, f"\nlauncher: log stream ended: {exc}\n".encode())
            # No readiness line at all: the slot's container failed before it; show what it said.
            self._emit(log, self.redactor.feed(held) + self.redactor.flush())

    def _emit(self, log: Any, data: bytes) -> None:
        if not data:
            return
        log.write(data)
        log.flush()
        if self.echo is not None:
            self.echo(data)


def _is_infrastructure(exc: LauncherError) -> bool:
    """Failures of the machinery, not of the agent: worth another attempt in a batch."""
    from launcher.errors import CapacityError, DockerError, GitLockContentionError, LockTimeoutError, StateStoreError

    if isinstance(exc, DockerError):
        return exc.code != "image-not-found"
    return isinstance(exc, GitLockContentionError | LockTimeoutError | StateStoreError | CapacityError)


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{what} is not UTF-8 text, so a pool slot cannot carry it: {exc}") from exc


def is_infrastructure_error(exc: LauncherError) -> bool:
    return _is_infrastructure(exc)


def git_config_env(entries: list[tuple[str, str]]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(entries))}
    for index, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def root_tag(root: Path) -> str:
    return hashlib.sha256(str(root).encode()).hexdigest()[:8]


def run_labels(root: Path, run: RunRecord) -> dict[str, str]:
    return {
        "launcher.run-id": run.id,
        "launcher.task-id": run.task_id,
        "launcher.root": str(root),
        "launcher.kind": "run",
    }

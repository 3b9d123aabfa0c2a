"""Planning: everything that can be refused is refused before anything is created."""

from __future__ import annotations

from collections.abc import Mapping

from launcher.core.netpolicy import EgressPolicy, NetworkMode, build_policy, normalise_mode, resolve_key_values
from launcher.core.run.deps import RunDeps
from launcher.core.run.disk import check_room
from launcher.core.run.request import RunPlan, RunRequest
from launcher.core.run.secrets import check_secret_value, resolve_secrets
from launcher.core.sparse import normalise_sparse_dirs
from launcher.errors import InvalidInputError
from launcher.settings import NetworkSettings, RunDefaults


def effective_network_mode(requested: str | None, defaults: RunDefaults, network: NetworkSettings) -> NetworkMode:
    """The option, else the deprecated [run].network, else [network].mode."""
    return normalise_mode(requested or defaults.network or network.mode)


def plan_run(deps: RunDeps, request: RunRequest, host_environ: Mapping[str, str]) -> RunPlan:
    d = deps.defaults
    task = deps.store.resolve_task(request.task)
    # A hand-broken task file is refused here, not met by the run's first write of it.
    deps.files.check_unchanged(task)
    command = list(request.command or task.command or d.command)
    if not command:
        raise InvalidInputError(
            f"task {task.id} has no agent command",
            hint="pass one after `--`, store one with `task create … -- CMD`, or set [run].command",
        )
    image = request.image or task.image or d.image
    image_id = deps.sandbox.image_id(image)
    check_room(deps)
    repo_path = deps.locate_repo(task)
    if not repo_path:
        raise InvalidInputError(
            f"task {task.id} names no repository on this machine",
            hint=f"add {task.repo!r} to projects.json, or create the task with --repo PATH",
        )
    repo = deps.open_repo(repo_path)
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
    egress = egress_policy(deps, request)
    if egress.mode != "none":
        if deps.egress is None:
            raise InvalidInputError("this launcher has no egress proxy; run with --network none")
        deps.egress.check()
    secrets = resolve_secrets(request.secrets, host_environ)
    api_key_values = resolve_key_values(egress, host_environ)
    for name, value in api_key_values.items():
        # The agent never sees these, but the log is scrubbed of them too: same rule.
        check_secret_value(f"--api-key {name}", value)
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
        secrets=secrets,
        api_key_values=api_key_values,
        # Slots are full checkouts: a sparse run is made from scratch.
        pool=request.pool and not sparse,
        sparse=sparse,
        grace=d.grace if request.grace is None else request.grace,
    )


def egress_policy(deps: RunDeps, request: RunRequest) -> EgressPolicy:
    configured = deps.network
    mode = effective_network_mode(request.network, deps.defaults, configured)
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

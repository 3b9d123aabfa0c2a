"""Planning: everything that can be refused is refused before anything is created."""

from __future__ import annotations

from collections.abc import Mapping

from launcher.core.netpolicy import EgressPolicy, NetworkMode, build_policy, normalise_mode, resolve_key_values
from launcher.core.run.deps import RunDeps
from launcher.core.run.disk import check_room
from launcher.core.run.request import RunPlan, RunRequest
from launcher.core.run.secrets import check_secret_value, resolve_secrets
from launcher.core.sparse import normalise_sparse_dirs
from launcher.errors import InvalidInputError, NotFoundError
from launcher.settings import NetworkSettings, PublishSettings, RunDefaults


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
    # Where the task's repository is here (a clone is fetched on the way): launcher/core/repos.py.
    repo_path = request.repo or deps.locate_repo(task)
    if not repo_path:
        raise NotFoundError(
            f"task {task.id}: its repository {task.repo!r} is not on this machine",
            hint=f"say where: `launcher run {task.id} --repo PATH|NAME`, projects.json, or [repos] in launcher.toml",
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
    forge_token = deps.publish.token_env
    if forge_token and forge_token in secrets:
        # The forge token is what publishes: a run that held it could push over anyone's work.
        raise InvalidInputError(
            f"--secret {forge_token}: that is [publish] token_env, the host's forge credential; runs never hold it",
            hint="the host pushes and opens pull requests itself (--push, --pr); pass the run another secret",
        )
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
        publish=publish_settings(deps, request, host_environ),
        concurrent=request.concurrent,
    )


def publish_settings(deps: RunDeps, request: RunRequest, host_environ: Mapping[str, str]) -> PublishSettings | None:
    """[publish] with the request's choices on top; None when nothing is to be published.

    What would only fail after the agent's work is done (no token for a pull request, a token
    variable that is not set) is refused now, before anything is made."""
    configured = deps.publish
    push = configured.push if request.push is None else request.push
    pr = configured.pr if request.pr is None else request.pr
    if not (push or pr):
        return None
    token = configured.token_env
    if pr and not token:
        raise InvalidInputError(
            "--pr needs the forge's token, and [publish] token_env names no variable",
            hint='set token_env = "GITHUB_TOKEN" (a variable of launcher\'s environment) under [publish] in '
            "launcher.toml, or run with --push only",
        )
    if token and not host_environ.get(token):
        raise InvalidInputError(
            f"[publish] token_env names {token}, which is not set (or empty) in launcher's environment",
            hint=f"export {token}=… where launcher runs (never inside a run), or remove token_env to use "
            "git's own credential helper",
        )
    # A pull request needs the branch on the remote: --pr implies the push.
    return configured.model_copy(update={"push": True, "pr": pr, "remote": request.remote or configured.remote})


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

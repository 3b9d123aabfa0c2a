"""Planning: everything that can be refused is refused before anything is created."""

from __future__ import annotations

from collections.abc import Mapping

from launcher.core import agents
from launcher.core.netpolicy import EgressPolicy, NetworkMode, build_policy, normalise_mode, resolve_key_values
from launcher.core.portleases import gather_wishes
from launcher.core.run.deps import RunDeps
from launcher.core.run.devcontainer import devcontainer_extras
from launcher.core.run.disk import check_room
from launcher.core.run.include import read_includes, redaction_values
from launcher.core.run.request import RunPlan, RunRequest
from launcher.core.run.secrets import check_secret_value, resolve_secrets
from launcher.core.run.services import check_sidecars, select_services
from launcher.core.run.trust import check_ca_file
from launcher.core.sparse import normalise_sparse_dirs
from launcher.errors import InvalidInputError, NotFoundError
from launcher.models import TaskRecord
from launcher.settings import AgentProfile, NetworkSettings, PublishSettings, RunDefaults


def effective_network_mode(requested: str | None, defaults: RunDefaults, network: NetworkSettings) -> NetworkMode:
    """The option, else the deprecated [run].network, else [network].mode."""
    return normalise_mode(requested or defaults.network or network.mode)


def plan_run(deps: RunDeps, request: RunRequest, host_environ: Mapping[str, str]) -> RunPlan:
    d = deps.defaults
    task = deps.store.resolve_task(request.task)
    # A hand-broken task file is refused here, not met by the run's first write of it.
    deps.files.check_unchanged(task)
    # So is one the run could not copy (a symbolic link, an oversized .md): before anything is
    # made. Files not on this machine yet (a task another box created) are rendered by the run.
    deps.files.read_copies(task)
    # Precedence, field by field: the command line, the task's stored fields, the agent
    # profile (--agent, else [agent] default), then [run].
    profile = request.profile
    command = list(request.command or task.command or (profile.command if profile else []) or d.command)
    if not command:
        raise InvalidInputError(
            f"task {task.id} has no agent command",
            hint="pass one after `--`, name an agent (--agent NAME), store one with `task create … -- CMD`, "
            "or set [run].command",
        )
    prompt = task_prompt(deps, request, task) if agents.uses_prompt(command) or profile else None
    command = agents.substitute(command, prompt)
    image = request.image or task.image or (profile.image if profile else None) or d.image
    check_room(deps)
    ca_file = request.ca_file or deps.network.ca_file
    if ca_file:
        check_ca_file(deps, ca_file)
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
    environment = devcontainer_extras(deps, request, repo, base_sha, image)
    includes = read_includes(deps.workspace, repo, d.include)
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
    egress = egress_policy(deps, request, profile)
    if egress.mode != "none":
        if deps.egress is None:
            raise InvalidInputError("this launcher has no egress proxy; run with --network none")
        deps.egress.check()
    ports = gather_wishes(request.ports, profile.ports if profile else {}, d.ports)
    services = select_services(d.services, request.services, profile.services if profile else [])
    check_sidecars(deps, ports, services, egress.mode)
    secrets = resolve_secrets(request.secrets, host_environ)
    forge_token = deps.publish.token_env
    if forge_token and forge_token in secrets:
        # The forge token is what publishes: a run that held it could push over anyone's work.
        raise InvalidInputError(
            f"--secret {forge_token}: that is [publish] token_env, the host's forge credential; runs never hold it",
            hint="the host pushes and opens pull requests itself (--push, --pr); pass the run another secret",
        )
    # The repository's own environment first (its onCreate/postCreate commands), then [run], then the profile.
    setup = [*environment.setup, *d.setup, *(profile.setup if profile else [])]
    api_key_values = resolve_key_values(egress, host_environ)
    for name, value in api_key_values.items():
        # The agent never sees these, but the log is scrubbed of them too: same rule.
        check_secret_value(f"--api-key {name}", value)
    return RunPlan(
        task=task,
        repo=repo,
        image=environment.image,
        image_id=environment.image_id,
        command=command,
        timeout=request.timeout or d.timeout,
        keep_worktree=keep,
        egress=egress,
        runtime=request.runtime or d.runtime,
        base_sha=base_sha,
        base_branch=repo.symbolic_branch(task.base_ref),
        secrets=secrets,
        api_key_values=api_key_values,
        # Slots are full checkouts: a sparse run is made from scratch; so is one that is given
        # files (its prompt, its includes) or setup commands, which a warmed slot has no mount for.
        # A run that trusts an extra CA needs its mount too.
        # Ports and services are made with the run's own container, which a warm slot already has.
        pool=request.pool
        and not sparse
        and prompt is None
        and not includes
        and not setup
        and not ca_file
        and not ports
        and not services,
        sparse=sparse,
        grace=d.grace if request.grace is None else request.grace,
        publish=publish_settings(deps, request, host_environ),
        concurrent=request.concurrent,
        ca_file=ca_file,
        agent=request.agent if profile is not None else None,
        # The devcontainer's containerEnv/remoteEnv, then the profile's: the more specific wins.
        env={**environment.env, **(profile.env if profile else {})},
        devcontainer=environment.devcontainer,
        environment_notes=environment.notes,
        prompt=prompt,
        setup=setup,
        includes=includes,
        redact=redaction_values(includes),
        ports=ports,
        services=services,
        labels=request.labels,
    )


def task_prompt(deps: RunDeps, request: RunRequest, task: TaskRecord) -> str | None:
    """--prompt / --prompt-file, else the task's description (its .md); None: there is none."""
    if request.prompt is not None:
        text = request.prompt
    else:
        path = deps.files.md_path(task)
        try:
            read = deps.files.read_md(task, max_bytes=agents.PROMPT_MAX, strict=True)
        except OSError as exc:
            raise InvalidInputError(f"task {task.id}: cannot read its description {path}: {exc}") from exc
        except InvalidInputError:
            raise _over_size() from None
        if read is None:
            return None
        text = read
    if len(text.encode()) > agents.PROMPT_MAX:
        raise _over_size()
    return text


def _over_size() -> InvalidInputError:
    return InvalidInputError(f"the prompt has more than {agents.PROMPT_MAX} bytes", hint="say it in fewer words")


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


def egress_policy(deps: RunDeps, request: RunRequest, profile: AgentProfile | None = None) -> EgressPolicy:
    configured = deps.network
    mode = effective_network_mode(request.network, deps.defaults, configured)
    if mode == "none":
        # launcher.toml's hosts do not apply; hosts named for this run would be silently lost.
        return build_policy(mode, request.allow, request.presets, request.api_keys, configured.preset)
    allow, presets = [*configured.allow, *request.allow], [*configured.presets, *request.presets]
    api_keys = list(request.api_keys)
    if profile is not None:
        allow, presets = [*profile.allow, *allow], [*profile.presets, *presets]
        # A route named on the command line replaces the profile's route of the same name.
        named = {route.partition("=")[0].strip() for route in request.api_keys}
        api_keys = [f"{name}={upstream}" for name, upstream in profile.api_keys.items() if name not in named] + api_keys
    return build_policy(mode, allow, presets, api_keys, configured.preset)

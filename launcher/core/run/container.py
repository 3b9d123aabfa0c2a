"""The container a run (or a warm slot, or a harvest) executes in: mounts, environment, limits."""

from __future__ import annotations

from launcher.core import agents, labels, uids
from launcher.core.egress import RunNetwork
from launcher.core.netpolicy import agent_environment
from launcher.core.ports import RepoPort
from launcher.core.run.case_scope import case_data_mounts, is_repo_local
from launcher.core.run.deps import RunDeps
from launcher.core.run.harness import harness_mounts
from launcher.core.run.include import CONTAINER_INCLUDE
from launcher.core.run.request import RunPlan
from launcher.core.run.services import Sidecars
from launcher.core.run.trust import run_trust
from launcher.core.runlayout import (
    CONTAINER_CASE_DATA,
    CONTAINER_CASE_ROOT,
    CONTAINER_ENTRY,
    CONTAINER_GIT_DIR,
    CONTAINER_HOME,
    CONTAINER_OBJECTS,
    CONTAINER_OUT,
    CONTAINER_WORKTREE,
    RunPaths,
)
from launcher.models import MountSpec, RunRecord, SandboxSpec

# Where a run's secrets are, one file per name, read-only. The container's configuration (what
# `docker inspect` shows any user of the engine) carries only NAME_FILE=<path> and the list of
# names; the entry exports each NAME from its file just before it starts the agent.
CONTAINER_SECRETS = "/run/launcher-secrets"


def git_config_env(entries: list[tuple[str, str]]) -> dict[str, str]:
    env = {"GIT_CONFIG_COUNT": str(len(entries))}
    for index, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def base_env(**extra: str) -> dict[str, str]:
    """What every container of a run's layout gets, whatever it is for."""
    # The worktree belongs to the run's uid, so git's ownership check passes anyway;
    # safe.directory only covers images whose git resolves the path differently.
    return {"HOME": CONTAINER_HOME, **extra, **git_config_env([("safe.directory", CONTAINER_WORKTREE)])}


def container_name(deps: RunDeps, holder: str) -> str:
    return f"launcher-{holder}-{labels.root_tag(deps.root)}"


def secret_env(secrets: dict[str, str], *, as_files: bool) -> dict[str, str]:
    """The secrets as the container's configuration holds them: by file, or (a warm slot's spec,
    which the engine never shows) by value."""
    if not as_files:
        return dict(secrets)
    env = {f"{name}_FILE": f"{CONTAINER_SECRETS}/{name}" for name in secrets}
    if secrets:
        env["LAUNCHER_SECRETS"] = " ".join(sorted(secrets))
    return env


def agent_env(
    plan: RunPlan, run: RunRecord, network: RunNetwork | None, *, secret_files: bool = False
) -> dict[str, str]:
    """The run's facts, secrets and proxy settings, as the agent sees them."""
    task = plan.task
    git_config = [("safe.directory", CONTAINER_WORKTREE)]
    env = {
        # The profile's variables first: the run's own facts and settings win over them.
        **{k: v for k, v in plan.env.items() if not k.startswith(("CASE_", "LAUNCHER_", "GIT_"))},
        "CASE_ROOT": CONTAINER_CASE_ROOT,
        "CASE_TASK_ID": task.id,
        "CASE_TASK_SLUG": task.slug,
        "CASE_RUN_ID": run.id,
        "CASE_BRANCH": run.branch,
        "CASE_WORKTREE": CONTAINER_WORKTREE,
        "CASE_BASE_SHA": plan.base_sha,
        "LAUNCHER_BASE_SHA": plan.base_sha,
        "HOME": CONTAINER_HOME,
        **secret_env(plan.secrets, as_files=secret_files),
    }
    if is_repo_local(task):
        env["CASE_DATA_DIR"] = CONTAINER_CASE_DATA
    if network is not None:
        proxy_env, forge_rewrites = agent_environment(plan.egress, network.subnet.proxy_ip)
        env.update(proxy_env)
        git_config += forge_rewrites
    env.update(git_config_env(git_config))
    return env


def run_spec(
    deps: RunDeps,
    plan: RunPlan,
    run: RunRecord,
    paths: RunPaths,
    uid: int,
    gid: int,
    network: RunNetwork | None,
    sidecars: Sidecars | None = None,
) -> SandboxSpec:
    spec = _run_spec(deps, plan, run, paths, uid, gid, network)
    if sidecars is None:
        return spec
    # Its fixed address (the port relay forwards there), its services' names, PORT_<NAME>.
    env = {**spec.env, **sidecars.env}
    return spec.model_copy(update={"ip": sidecars.agent_ip, "extra_hosts": dict(sidecars.hosts), "env": env})


def _run_spec(
    deps: RunDeps, plan: RunPlan, run: RunRecord, paths: RunPaths, uid: int, gid: int, network: RunNetwork | None
) -> SandboxSpec:
    secret_files = bool(plan.secrets)
    mounts: tuple[MountSpec, ...] = ()
    if secret_files:
        folder = paths.sandbox / "secrets"
        deps.workspace.write_secrets(folder, {n: v.encode() for n, v in plan.secrets.items()}, uid, gid)
        mounts = (MountSpec(target=CONTAINER_SECRETS, source=str(folder), read_only=True),)
    mounts += given_files(deps, plan, run, paths, uid, gid)
    trust_mounts, trust_env = run_trust(deps, plan, paths)
    mounts += tuple(trust_mounts)
    return container_spec(
        deps,
        repo=plan.repo,
        project=plan.task.repo,
        image=plan.image,
        runtime=plan.runtime,
        paths=paths,
        uid=uid,
        gid=gid,
        network=network,
        name=container_name(deps, run.id),
        labels=labels.for_run(deps.root, run.id, run.task_id),
        command=plan.command,
        env={**agent_env(plan, run, network, secret_files=secret_files), **setup_env(plan), **trust_env},
        extra_mounts=mounts,
    )


def given_files(
    deps: RunDeps, plan: RunPlan, run: RunRecord, paths: RunPaths, uid: int, gid: int
) -> tuple[MountSpec, ...]:
    """The prompt's file and the included files, each read-only in the run; the prompt (and
    the agent's name) go into the run's record too: a prompt is not a secret."""
    mounts: list[MountSpec] = []
    if plan.prompt is not None:
        prompt_file = paths.sandbox / "prompt.md"
        deps.workspace.write_file(prompt_file, plan.prompt.encode())
        mounts.append(MountSpec(target=agents.CONTAINER_PROMPT, source=str(prompt_file), read_only=True))
    if plan.prompt is not None or plan.agent is not None:
        recorded = plan.prompt.encode()[: agents.PROMPT_RECORD_MAX].decode("utf-8", "ignore") if plan.prompt else None
        deps.store.update_run(run.id, details={"agent": plan.agent, "prompt": recorded})
    if plan.includes:
        # By index: the names are the entry's to place (as the run's uid, after its checkout).
        folder = paths.sandbox / "include"
        deps.workspace.write_secrets(folder, {str(i): data for i, data in enumerate(plan.includes.values())}, uid, gid)
        mounts.append(MountSpec(target=CONTAINER_INCLUDE, source=str(folder), read_only=True))
    return tuple(mounts)


def setup_env(plan: RunPlan) -> dict[str, str]:
    """The setup commands and the include paths, numbered (as GIT_CONFIG_* are) for the entry."""
    env: dict[str, str] = {}
    if plan.setup:
        env["LAUNCHER_SETUP_COUNT"] = str(len(plan.setup))
        env.update({f"LAUNCHER_SETUP_{i}": command for i, command in enumerate(plan.setup)})
    if plan.includes:
        env["LAUNCHER_INCLUDE_COUNT"] = str(len(plan.includes))
        env.update({f"LAUNCHER_INCLUDE_{i}": path for i, path in enumerate(plan.includes)})
    return env


def harvest_spec(deps: RunDeps, repo: RepoPort, run: RunRecord, paths: RunPaths, image: str, uid: int) -> SandboxSpec:
    """The run's own layout, without the harness and without a network: it only bundles the commits."""
    return container_spec(
        deps,
        repo=repo,
        project=None,
        image=image,
        runtime=None,
        paths=paths,
        uid=uid,
        gid=uids.ids_of(uid)[1],
        network=None,
        name=container_name(deps, f"{run.id}-harvest"),
        labels=labels.for_run(deps.root, run.id, run.task_id, kind="harvest"),
        command=[],
        env=base_env(LAUNCHER_PHASE="harvest", LAUNCHER_BASE_SHA=run.details.base_sha or ""),
    )


def container_spec(
    deps: RunDeps,
    *,
    repo: RepoPort,
    project: str | None,
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
    """A container on a run's layout: a run's, a warm slot's (its own layout), or a harvest's.

    ``project`` is the task's repository name whose harness view the container gets; None: no
    harness at all (a harvest needs none).
    """
    mounts = [
        MountSpec(target=CONTAINER_WORKTREE, source=str(paths.worktree)),
        MountSpec(target=f"{CONTAINER_WORKTREE}/.git", source=str(paths.dotgit), read_only=True),
        MountSpec(target=CONTAINER_GIT_DIR, source=str(paths.git_dir)),
        MountSpec(target=CONTAINER_OBJECTS, source=str(repo.objects_dir), read_only=True),
        MountSpec(target=CONTAINER_OUT, source=str(paths.out_dir)),
        MountSpec(target=CONTAINER_ENTRY, source=str(deps.entry_script), read_only=True),
        *(harness_mounts(deps, project, paths) if project is not None else []),
        *(case_data_mounts(paths) if project is not None else []),
        *extra_mounts,
    ]
    if network is not None:
        # Names never resolve inside a run (the proxy resolves them): a resolver where nothing
        # listens makes lookups fail at once instead of after the usual seconds of retries.
        resolv = paths.sandbox / "resolv.conf"
        deps.workspace.write_file(resolv, b"nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        mounts.append(MountSpec(target="/etc/resolv.conf", source=str(resolv), read_only=True))
    d = deps.defaults
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

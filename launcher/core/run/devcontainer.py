"""The image a run uses: the one named, or the repository's own dev environment (--devcontainer).

The environment is read from the task's base commit by host git (never from a worktree an agent
wrote), built on the host's engine FROM what devcontainer.json names plus launcher's layer, and
tagged by the hash of everything it was made from, so an unchanged configuration is never built
twice. Whatever image a run uses is checked up front against the run's contract (git, the
entry's tools, an arbitrary uid on a read-only root), so a run never fails halfway for want of it.
"""

from __future__ import annotations

import hashlib
import re

from pydantic import BaseModel, ConfigDict, Field

from launcher.core import labels
from launcher.core.devcontainer_json import (
    DEVCONTAINER_PATHS,
    MAX_DEVCONTAINER_BYTES,
    Devcontainer,
    parse_devcontainer,
    resolve_container_env,
)
from launcher.core.ports import RepoPort
from launcher.core.ports.images import CommitBuild, ImageBuilderPort, ImageCheck
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import RunRequest
from launcher.errors import InvalidInputError, NotFoundError
from launcher.settings import DEFAULT_IMAGE

# `[run] image = "devcontainer"`: the repository's own environment instead of a named image.
DEVCONTAINER_IMAGE = "devcontainer"
IMAGE_PREFIX = "launcher/devcontainer-"
# What launcher adds on top of the repository's environment. The run's user contract (its own
# uid, read-only root, tmpfs /tmp and $HOME) is given at run time and checked, not baked in; the
# entry script is mounted. Changing this text changes every devcontainer image's hash.
LAYER = """\
FROM {base}
# launcher's layer: the tool settings launcher/agent-base sets, for runs behind the egress proxy.
ENV NODE_USE_ENV_PROXY=1 PAGER=cat GIT_PAGER=cat
"""


class RunEnvironment(BaseModel):
    """The image a run uses and, for a devcontainer, what else it asks of the run."""

    model_config = ConfigDict(frozen=True)

    image: str = Field(description="the image reference the run is made from")
    image_id: str
    devcontainer: str | None = Field(default=None, description="the devcontainer.json it came from, if any")
    setup: list[str] = Field(
        default_factory=list,
        description="onCreate/updateContent/postCreate/postStartCommand as shell strings, run before the agent",
    )
    env: dict[str, str] = Field(default_factory=dict, description="containerEnv then remoteEnv, for the run")
    notes: list[str] = Field(default_factory=list, description="what of the devcontainer.json was ignored, and why")
    built: bool = Field(default=False, description="built now (False: the cached image was used)")


def resolve_image(deps: RunDeps, request: RunRequest, repo: RepoPort, base_sha: str, image: str) -> tuple[str, str]:
    """The image reference and its ID for this run (checked to exist now, before anything is made)."""
    environment = devcontainer_extras(deps, request, repo, base_sha, image)
    return environment.image, environment.image_id


def devcontainer_extras(
    deps: RunDeps, request: RunRequest, repo: RepoPort, base_sha: str, image: str
) -> RunEnvironment:
    """The run's image (the named one or the devcontainer's, built if need be), checked, with the
    devcontainer's setup commands, environment and notes."""
    builder = deps.image_builder
    wanted = request.devcontainer if request.devcontainer is not None else image == DEVCONTAINER_IMAGE
    if wanted:
        if builder is None:
            raise InvalidInputError(
                "--devcontainer needs a launcher that builds images, and this one has no Docker image builder"
            )
        environment = devcontainer_environment(builder, repo, base_sha)
    else:
        # --no-devcontainer over `[run] image = "devcontainer"`: the default image.
        named = DEFAULT_IMAGE if image == DEVCONTAINER_IMAGE else image
        environment = RunEnvironment(image=named, image_id=deps.sandbox.image_id(named))
    if builder is not None:
        require_run_contract(environment.image, builder.check(environment.image_id))
    return environment


def devcontainer_environment(builder: ImageBuilderPort, repo: RepoPort, base_sha: str) -> RunEnvironment:
    path, data = read_devcontainer(builder, repo, base_sha)
    config = parse_devcontainer(data, path, repo_name=repo.toplevel.name)
    name = IMAGE_PREFIX.removeprefix("launcher/") + image_slug(repo.toplevel.name)
    digest = hashlib.sha256()
    for part in (LAYER.encode(), path.encode(), data):
        digest.update(hashlib.sha256(part).digest())
    if config.build is not None:
        tree = builder.tree_id(repo, base_sha, config.build.context)
        if tree is None:
            raise InvalidInputError(
                f"{path}: build.context {config.build.context or '.'!r} is not a folder at {base_sha[:12]}"
            )
        digest.update(tree.encode())
    else:
        assert config.image is not None  # parse_devcontainer requires one of the two
        # The base image's ID, not its name: a re-pulled tag is a new environment.
        base_id = builder.local_or_pull(config.image)
        digest.update(base_id.encode())
    content = digest.hexdigest()[:16]
    tag = f"launcher/{name}:{content}"
    image_labels = {labels.IMAGE: name, labels.CONTENT_HASH: content}
    image_id = builder.find(tag)
    built = image_id is None
    if image_id is None:
        image_id = build_environment(builder, repo, base_sha, config, tag, image_labels)
    image_env = builder.image_env(image_id)
    seen = {**image_env, **config.container_env}
    env = {**config.container_env, **{k: resolve_container_env(v, seen) for k, v in config.remote_env.items()}}
    notes = [*config.notes, f"{path}: {'built' if built else 'reused'} {tag} from base commit {base_sha[:12]}"]
    return RunEnvironment(
        image=tag, image_id=image_id, devcontainer=path, setup=config.setup, env=env, notes=notes, built=built
    )


def read_devcontainer(builder: ImageBuilderPort, repo: RepoPort, base_sha: str) -> tuple[str, bytes]:
    for path in DEVCONTAINER_PATHS:
        data = builder.read_file(repo, base_sha, path, max_bytes=MAX_DEVCONTAINER_BYTES)
        if data is not None:
            return path, data
    raise NotFoundError(
        f"--devcontainer: {repo.toplevel} has neither {' nor '.join(DEVCONTAINER_PATHS)} at the task's base "
        f"commit {base_sha[:12]}",
        hint="commit a devcontainer.json there, or run with --image IMAGE",
    )


def build_environment(
    builder: ImageBuilderPort,
    repo: RepoPort,
    base_sha: str,
    config: Devcontainer,
    tag: str,
    image_labels: dict[str, str],
) -> str:
    if config.build is not None:
        base = builder.build_from_commit(
            repo,
            CommitBuild(
                commit=base_sha,
                context=config.build.context,
                dockerfile=config.build.dockerfile,
                args=config.build.args,
                target=config.build.target,
                tag=f"{tag}-env",
                labels=image_labels,
            ),
        )
    else:
        assert config.image is not None
        base = builder.local_or_pull(config.image)
    return builder.build_dockerfile(LAYER.format(base=base), tag=tag, labels=image_labels)


def require_run_contract(image: str, check: ImageCheck) -> None:
    """InvalidInputError saying what ``image`` lacks, unless the check passed."""
    if check.ok:
        return
    parts = []
    if check.missing:
        parts.append("missing " + ", ".join(check.missing))
    parts.extend(check.problems)
    if "git" in check.missing:
        hint = (
            "a run checks out and captures its work with git inside the container: install git in the image "
            "(e.g. `RUN apt-get install -y git` in its Dockerfile) or build on launcher/agent-base"
        )
    else:
        hint = "a run executes as an arbitrary uid with a read-only root and tmpfs /tmp and $HOME; fix the image"
    raise InvalidInputError(f"image {image!r} cannot host a run: {'; '.join(parts)}", hint=hint)


def image_slug(name: str) -> str:
    """A repository's folder name as a Docker repository name component."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    return slug[:64] or "repo"

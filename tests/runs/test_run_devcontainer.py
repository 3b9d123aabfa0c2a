"""The repository's own environment (--devcontainer), against real git and the real engine.

The image a run uses is resolved the way plan.py does (launcher/core/run/devcontainer.py) with the
real Docker image builder: devcontainer.json read from the base commit by host git, built FROM its
image or Dockerfile plus launcher's layer, cached by content, and any image checked up front.
Nothing is pulled: the environments start FROM images this engine has (launcher/agent-base,
debian:bookworm-slim). Each test's repository has a name of its own, and the images built for it
(labelled launcher.image=devcontainer-<name>) are removed afterwards, by that label only.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from helpers import docker_client, git, make_repo
from runkit import Case, facts, run_id_of

from launcher.adapters.docker.image_builder import DockerImageBuilder
from launcher.adapters.docker.sandbox import DockerSandbox
from launcher.adapters.git import Repository
from launcher.core import labels
from launcher.core.ports.images import CommitBuild
from launcher.core.run.deps import RunDeps
from launcher.core.run.devcontainer import RunEnvironment, devcontainer_extras, resolve_image
from launcher.core.run.request import RunRequest
from launcher.errors import InvalidInputError, NotFoundError

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BASE_IMAGE = "launcher/agent-base:latest"


class CountingBuilder(DockerImageBuilder):
    """The real builder, counting what it builds and checks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.builds: list[str] = []
        self.log: list[str] = []
        self._progress = self.log.append

    def build_from_commit(self, repo: Any, build: CommitBuild) -> str:
        self.builds.append(build.tag)
        return super().build_from_commit(repo, build)

    def build_dockerfile(self, dockerfile: str, *, tag: str, labels: dict[str, str]) -> str:
        self.builds.append(tag)
        return super().build_dockerfile(dockerfile, tag=tag, labels=labels)


class World:
    def __init__(self, tmp: Path) -> None:
        self.name = f"dc-{uuid.uuid4().hex[:10]}"
        self.path = tmp / self.name
        self.tmp = tmp
        self.builder = CountingBuilder(tmp / "image-checks", root=tmp / "root")

    def repo(self, files: dict[str, str]) -> Repository:
        make_repo(self.path, {"README.md": "# demo\n", **files})
        return Repository.open(self.path, lock_dir=self.tmp / "locks")

    def resolve(self, repo: Repository, *, devcontainer: bool | None = True, image: str = BASE_IMAGE) -> RunEnvironment:
        deps = cast(RunDeps, SimpleNamespace(sandbox=DockerSandbox(), image_builder=self.builder))
        request = RunRequest(task="T-1", devcontainer=devcontainer)
        return devcontainer_extras(deps, request, repo, repo.resolve_commit("HEAD"), image)

    def images(self) -> list[Any]:
        client = docker_client()
        try:
            return list(client.images.list(filters={"label": f"{labels.IMAGE}=devcontainer-{self.name}"}))
        finally:
            client.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    made = World(tmp_path)
    try:
        yield made
    finally:
        client = docker_client()
        try:
            for image in made.images():
                client.images.remove(image.id, force=True)
        finally:
            client.close()


def in_image(image: str, script: str) -> str:
    """What ``script`` prints in a container of ``image``, run the way a run is (arbitrary uid, read-only)."""
    proc = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--read-only", "--user", "23457:23457",
         "--entrypoint", "/bin/sh", image, "-c", script],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def devcontainer(doc: dict[str, Any], comment: str = "// launcher test\n") -> str:
    return comment + json.dumps(doc, indent=2).replace("\n}", ",\n}")  # a trailing comma, as editors write


def test_image_with_env_and_post_create_command_then_a_cache_hit(world: World) -> None:
    repo = world.repo(
        {
            ".devcontainer/devcontainer.json": devcontainer(
                {
                    "name": "demo",
                    "image": BASE_IMAGE,
                    "containerEnv": {"DEMO_MODE": "devcontainer"},
                    "remoteEnv": {"PATH": "${containerEnv:PATH}:/workspace/bin", "WS": "${containerWorkspaceFolder}"},
                    "onCreateCommand": "echo on-create > /tmp/on-create",
                    "postCreateCommand": ["sh", "-c", "echo post-create > /tmp/post-create"],
                    "customizations": {"vscode": {"extensions": ["ms-python.python"]}},
                }
            )
        }
    )
    first = world.resolve(repo)
    assert first.built
    assert first.devcontainer == ".devcontainer/devcontainer.json"
    assert first.image.startswith(f"launcher/devcontainer-{world.name}:")
    assert first.setup == ["echo on-create > /tmp/on-create", "sh -c 'echo post-create > /tmp/post-create'"]
    image_path = in_image(first.image, "echo $PATH")
    assert first.env == {
        "DEMO_MODE": "devcontainer",
        "PATH": image_path.strip() + ":/workspace/bin",
        "WS": "/workspace",
    }
    assert any("'customizations' ignored" in note for note in first.notes)
    assert any("'name' ignored" in note for note in first.notes)
    # launcher's layer is there, and the image carries the labels gc and tests find it by.
    assert in_image(first.image, "echo $NODE_USE_ENV_PROXY; git --version").startswith("1\ngit version")
    (image,) = world.images()
    assert image.id == first.image_id
    assert image.labels[labels.CONTENT_HASH] == first.image.rsplit(":", 1)[1]
    builds = list(world.builder.builds)
    assert builds == [first.image]

    second = world.resolve(repo)
    assert not second.built
    assert (second.image, second.image_id, second.setup, second.env) == (
        first.image,
        first.image_id,
        first.setup,
        first.env,
    )
    assert world.builder.builds == builds, "the second resolve rebuilt an unchanged environment"
    assert resolve_image(
        cast(RunDeps, SimpleNamespace(sandbox=DockerSandbox(), image_builder=world.builder)),
        RunRequest(task="T-1", devcontainer=True),
        repo,
        repo.resolve_commit("HEAD"),
        BASE_IMAGE,
    ) == (first.image, first.image_id)


def test_build_dockerfile_from_the_base_commit_not_the_worktree(world: World) -> None:
    repo = world.repo(
        {
            ".devcontainer/devcontainer.json": devcontainer(
                {
                    "build": {"dockerfile": "Dockerfile", "context": "..", "args": {"FLAVOUR": "committed"}},
                    "postCreateCommand": "make setup",
                }
            ),
            ".devcontainer/Dockerfile": (
                f"FROM {BASE_IMAGE}\nARG FLAVOUR=unset\nUSER root\n"
                "COPY tools/hello.txt /opt/hello.txt\nRUN echo $FLAVOUR > /opt/flavour\nUSER 1000\n"
            ),
            "tools/hello.txt": "hello from the base commit\n",
        }
    )
    # What the checkout holds now is not what the run's base commit holds: the build must not see it.
    (world.path / "tools" / "hello.txt").write_text("an uncommitted edit\n")
    (world.path / "tools" / "extra.txt").write_text("an untracked file\n")

    env = world.resolve(repo)
    assert env.built
    assert env.setup == ["make setup"]
    assert in_image(env.image, "cat /opt/hello.txt /opt/flavour; ls /opt") == (
        "hello from the base commit\ncommitted\nflavour\nhello.txt\n"
    )
    assert [tag.rsplit(":", 1)[1] for tag in world.builder.builds] == [
        env.image.rsplit(":", 1)[1] + "-env",
        env.image.rsplit(":", 1)[1],
    ]
    assert any("Step" in line for line in world.builder.log), "the build log was not streamed"

    # A new commit of the context is a new environment.
    git("commit", "-qam", "edit hello", cwd=world.path)
    again = world.resolve(repo)
    assert again.built
    assert again.image != env.image
    assert in_image(again.image, "cat /opt/hello.txt") == "an uncommitted edit\n"


def test_the_default_context_is_the_devcontainer_folder(world: World) -> None:
    repo = world.repo(
        {
            ".devcontainer/devcontainer.json": devcontainer({"build": {"dockerfile": "Dockerfile"}}),
            ".devcontainer/Dockerfile": f"FROM {BASE_IMAGE}\nUSER root\nCOPY setup.txt /opt/setup.txt\nUSER 1000\n",
            ".devcontainer/setup.txt": "only the folder is the context\n",
        }
    )
    env = world.resolve(repo)
    assert in_image(env.image, "cat /opt/setup.txt") == "only the folder is the context\n"


def test_features_are_refused_by_name_before_anything_is_built(world: World) -> None:
    repo = world.repo(
        {
            ".devcontainer.json": devcontainer(
                {"image": BASE_IMAGE, "features": {"ghcr.io/devcontainers/features/node:1": {"version": "20"}}}
            )
        }
    )
    with pytest.raises(InvalidInputError) as caught:
        world.resolve(repo)
    message = str(caught.value)
    assert ".devcontainer.json: 'features' cannot be honoured" in message
    assert "OCI registry" in message
    assert caught.value.exit_code == 6
    assert world.builder.builds == []
    assert world.images() == []


def test_a_repository_without_devcontainer_json_is_told_where_launcher_looked(world: World) -> None:
    repo = world.repo({"src/app.py": "print('hi')\n"})
    # An uncommitted devcontainer.json is not the base commit's: it does not count.
    (world.path / ".devcontainer.json").write_text(json.dumps({"image": BASE_IMAGE}))
    with pytest.raises(NotFoundError) as caught:
        world.resolve(repo)
    message = str(caught.value)
    assert ".devcontainer/devcontainer.json" in message
    assert ".devcontainer.json" in message.replace(".devcontainer/devcontainer.json", "")
    assert "base commit" in message


def test_a_symlinked_devcontainer_json_is_not_followed(world: World) -> None:
    repo = world.repo({"elsewhere.json": json.dumps({"image": BASE_IMAGE})})
    (world.path / ".devcontainer.json").symlink_to("elsewhere.json")
    git("add", ".devcontainer.json", cwd=world.path)
    git("commit", "-qm", "link", cwd=world.path)
    with pytest.raises(InvalidInputError, match=r"\.devcontainer\.json at [0-9a-f]{12} is a symlink"):
        world.resolve(repo)


def test_an_image_without_git_is_refused_up_front(world: World) -> None:
    repo = world.repo({})
    with pytest.raises(InvalidInputError) as caught:
        world.resolve(repo, devcontainer=None, image="debian:bookworm-slim")
    assert "image 'debian:bookworm-slim' cannot host a run: missing git" in str(caught.value)
    assert "install git" in (caught.value.hint or "")
    # The devcontainer's environment is checked the same way once built.
    repo = world.repo({".devcontainer.json": devcontainer({"image": "debian:bookworm-slim"})})
    with pytest.raises(
        InvalidInputError, match=r"image 'launcher/devcontainer-dc-[0-9a-f]+:[0-9a-f]{16}' .*missing git"
    ):
        world.resolve(repo)


def test_a_named_image_that_passes_is_checked_once(world: World) -> None:
    repo = world.repo({})
    env = world.resolve(repo, devcontainer=None)
    assert (env.image, env.setup, env.env, env.built) == (BASE_IMAGE, [], {}, False)
    assert world.builder.check(env.image_id).cached
    # `[run] image = "devcontainer"` turned off with --no-devcontainer: the default image.
    assert world.resolve(repo, devcontainer=False, image="devcontainer").image == BASE_IMAGE


def test_a_run_with_devcontainer_uses_the_repository_s_environment(case: Case, world: World) -> None:
    """Through the CLI: `launcher run --devcontainer` builds the environment and runs the agent in it."""
    world.repo(
        {
            ".devcontainer/devcontainer.json": devcontainer(
                {"build": {"dockerfile": "Dockerfile"}, "postCreateCommand": "echo set up > /tmp/setup-ran"}
            ),
            ".devcontainer/Dockerfile": f"FROM {BASE_IMAGE}\nUSER root\nRUN echo from-devcontainer > /opt/marker\n",
        }
    )
    task_id = case.create_task(world.path, "In its own environment", "--", "sh", "-c", AGENT)
    result = case.cli("run", task_id, "--devcontainer")
    assert result.exit_code == 0, result.stderr
    seen = facts(result.stdout)
    assert seen["marker"] == "from-devcontainer"
    record = case.run_record(run_id_of(result.stderr))
    assert str(record["image"]).startswith(f"launcher/devcontainer-{world.name}:")
    assert record["details"]["devcontainer"] == ".devcontainer/devcontainer.json"
    assert seen["setup"] == "set up", "postCreateCommand ran in the run, before the agent"
    log = Path(record["details"]["log"]).read_text()
    assert "launcher-setup: $ echo set up > /tmp/setup-ran" in log


AGENT = r"""
echo "FACT marker=$(cat /opt/marker)"
echo "FACT setup=$(cat /tmp/setup-ran 2>/dev/null || echo none)"
"""

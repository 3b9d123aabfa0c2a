"""Agent profiles: launcher.toml's tables, where each profile came from, the prompt as one argument,
and the precedence command line > task > profile > [run], field by field."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeWorld

from launcher.core import agents
from launcher.core.run import RunRequest
from launcher.core.run.plan import egress_policy
from launcher.core.tasks import RepoRef, TaskService
from launcher.errors import InvalidInputError
from launcher.settings import AgentProfile, AgentSettings, LauncherConfig

TOML = """
[run]
image = "run/image"
command = ["run-command"]
setup = ["echo run-setup"]

[agent]
default = "mine"

[agent.mine]
description = "my agent"
image = "mine/image"
command = ["mine", "--file", "{prompt_file}", "{prompt}"]
env = { MINE_QUIET = "1" }
api_keys = { MINE_KEY = "https://api.mine.example" }
presets = ["pypi"]
allow = ["git.mine.example"]
setup = ["echo mine-setup"]

[agent.aider]
image = "my/aider"
command = ["aider", "--message", "{prompt}"]
"""


def config() -> LauncherConfig:
    return LauncherConfig.model_validate(tomllib.loads(TOML))


def test_agent_tables_sit_beside_default_and_say_where_each_came_from() -> None:
    settings = config().agent
    assert settings.default == "mine"
    sources = {entry.name: entry.source for entry in agents.profiles(settings)}
    assert sources == {
        "claude": "built-in",
        "codex": "built-in",
        "gemini": "built-in",
        "aider": "built-in, overridden by launcher.toml",
        "opencode": "built-in",
        "shell": "built-in",
        "mine": "launcher.toml",
    }
    assert [entry.name for entry in agents.profiles(settings) if entry.default] == ["mine"]
    assert agents.resolve(settings, "aider") == ("aider", AgentProfile(image="my/aider", command=sourced("aider")))
    assert agents.resolve(settings, None) == ("mine", settings.profiles["mine"])
    assert agents.resolve(AgentSettings(), None) is None


def sourced(name: str) -> list[str]:
    return list(config().agent.profiles[name].command)


def test_an_unknown_agent_or_field_is_refused_with_the_known_names() -> None:
    with pytest.raises(InvalidInputError, match=r"--agent 'nope': no such agent profile") as caught:
        agents.resolve(config().agent, "nope")
    assert "claude" in (caught.value.hint or "")
    assert "mine" in (caught.value.hint or "")
    with pytest.raises(InvalidInputError, match=r"\[agent\] default 'gone'"):
        agents.resolve(AgentSettings(default="gone"), None)
    with pytest.raises(ValueError, match="imgae"):
        LauncherConfig.model_validate({"agent": {"x": {"imgae": "typo"}}})


def test_every_built_in_takes_the_prompt_and_has_an_image_of_the_agent_images() -> None:
    images = {
        "claude": "launcher/agent-claude:latest",
        "codex": "launcher/agent-codex:latest",
        "gemini": "launcher/agent-gemini:latest",
        "aider": "launcher/agent-aider:latest",
        "opencode": "launcher/agent-opencode:latest",
        "shell": "launcher/agent-base:latest",
    }
    assert {name: profile.image for name, profile in agents.BUILT_IN.items()} == images
    for name, profile in agents.BUILT_IN.items():
        assert agents.uses_prompt(profile.command), name
    assert agents.BUILT_IN["aider"].command[-2:] == ["--message-file", agents.PROMPT_FILE]
    assert "--yes-always" in agents.BUILT_IN["aider"].command


HOSTILE = "Fix it\"; touch /tmp/pwned; echo '$(id)' `id` \n-- --help"


def test_the_prompt_is_one_argument_verbatim_never_part_of_another() -> None:
    command = agents.substitute(["tool", "--file={prompt_file}", "{prompt}", "tail"], HOSTILE)
    assert command == ["tool", f"--file={agents.CONTAINER_PROMPT}", HOSTILE, "tail"]
    with pytest.raises(InvalidInputError, match="must be an argument of its own"):
        agents.substitute(["sh", "-c", "echo {prompt}"], HOSTILE)
    with pytest.raises(InvalidInputError, match="there is none"):
        agents.substitute(["tool", "{prompt}"], None)
    assert agents.substitute(["make", "test"], None) == ["make", "test"]
    big = "x" * (agents.PROMPT_ARG_MAX + 1)
    with pytest.raises(InvalidInputError, match="too long for one argument"):
        agents.substitute(["tool", "{prompt}"], big)
    assert agents.substitute(["tool", "{prompt_file}"], big) == ["tool", agents.CONTAINER_PROMPT]


def test_a_title_is_the_prompts_first_line_trimmed() -> None:
    assert agents.title_of("\n\n  # Fix the failing test  \nmore") == "Fix the failing test"
    long = agents.title_of("x" * 200)
    assert len(long) == 80
    assert long.endswith("…")
    with pytest.raises(InvalidInputError):
        agents.title_of("  \n ")


def world_with_config(tmp_path: Path) -> FakeWorld:
    loaded = config()
    world = FakeWorld.make(tmp_path, **loaded.run.model_dump(exclude_unset=True))
    for image in ("run/image", "mine/image", "task/image", "flag/image"):
        world.sandbox.images[image] = f"sha256:{image}"
    return world


def new_task(world: FakeWorld, *, image: str | None = None, command: list[str] | None = None) -> str:
    tasks = TaskService(world.store, world.deps.files)
    repo = RepoRef(name="demo", path=str(world.repo.toplevel))
    return tasks.create(repo, "Fix the failing test", body="The task's own words.\n", image=image, command=command).id


def plan_of(world: FakeWorld, task: str, **request: Any) -> Any:
    settings = config().agent
    name, profile = agents.resolve(settings, request.pop("agent", None)) or (None, None)
    return world.service.plan(
        RunRequest(task=task, network="none", agent=name, profile=profile, **request), host_environ={}
    )


def test_precedence_flags_then_task_then_profile_then_run_defaults(tmp_path: Path) -> None:
    world = world_with_config(tmp_path)
    try:
        bare = new_task(world)
        stored = new_task(world, image="task/image", command=["task-command", "{prompt}"])

        # The profile fills what neither the command line nor the task says; its prompt: the task's .md.
        plan = plan_of(world, bare)
        assert (plan.image, plan.agent) == ("mine/image", "mine")
        assert plan.command == ["mine", "--file", agents.CONTAINER_PROMPT, plan.prompt]
        assert "The task's own words." in plan.prompt
        assert plan.env == {"MINE_QUIET": "1"}
        assert plan.setup == ["echo run-setup", "echo mine-setup"]
        # The task's stored fields win over the profile.
        plan = plan_of(world, stored)
        assert (plan.image, plan.command[0]) == ("task/image", "task-command")
        # The command line wins over both, and --prompt over the task's .md.
        plan = plan_of(world, stored, image="flag/image", command=["flag", "{prompt}"], prompt="From the flag")
        assert (plan.image, plan.command) == ("flag/image", ["flag", "From the flag"])
        # No profile at all ([agent] default unset, none named): [run] as before.
        settings_free = world.service.plan(RunRequest(task=bare, network="none"), host_environ={})
        assert (settings_free.image, settings_free.command) == ("run/image", ["run-command"])
        assert (settings_free.agent, settings_free.prompt, settings_free.setup) == (None, None, ["echo run-setup"])
        assert plan.pool is False, "a run given a prompt file is made from scratch (a warm slot has no mount for it)"
    finally:
        world.close()


def test_profile_hosts_and_key_routes_add_to_the_run_and_a_flag_replaces_a_route_by_name(tmp_path: Path) -> None:
    world = world_with_config(tmp_path)
    try:
        profile = config().agent.profiles["mine"]
        policy = egress_policy(world.deps, RunRequest(task="x", network="allowlist"), profile)
        assert {route.name: route.upstream for route in policy.api_keys} == {"MINE_KEY": "https://api.mine.example"}
        assert any("git.mine.example" in str(rule) for rule in policy.allow)
        assert any("pypi.org" in str(rule) for rule in policy.allow)
        flagged = RunRequest(task="x", network="allowlist", api_keys=["MINE_KEY=https://stand-in.example"])
        policy = egress_policy(world.deps, flagged, profile)
        assert [(route.name, route.upstream) for route in policy.api_keys] == [("MINE_KEY", "https://stand-in.example")]
    finally:
        world.close()


def test_task_create_with_an_agent_stores_its_image_and_command_and_titles_from_the_prompt(
    cli: Any, case_root: Path, git_repo: Path
) -> None:
    result = cli("task", "create", "--repo", str(git_repo), "--agent", "aider", "--prompt", "Fix X\n\nmore", "--json")
    assert result.exit_code == 0, result.stderr
    task = json.loads(result.stdout)
    assert task["title"] == "Fix X"
    assert task["image"] == "launcher/agent-aider:latest"
    assert task["command"] == agents.BUILT_IN["aider"].command
    assert "Fix X\n\nmore\n" in Path(task["paths"]["md"]).read_text()
    # An explicit image and command win over the profile's.
    result = cli("task", "create", "--repo", str(git_repo), "--agent", "aider", "--title", "T", "--image", "mine",
                 "--json", "--", "my-agent", "{prompt_file}")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert (json.loads(result.stdout)["image"], json.loads(result.stdout)["command"]) == (
        "mine",
        ["my-agent", "{prompt_file}"],
    )


def test_agent_list_says_where_each_profile_came_from(cli: Any, case_root: Path) -> None:
    (case_root / "launcher.toml").write_text(TOML)
    result = cli("agent", "list", "--json")
    assert result.exit_code == 0, result.stderr
    listed = {
        entry["name"]: (entry["source"], entry["default"], entry["profile"]["image"])
        for entry in json.loads(result.stdout)
    }
    assert listed["aider"] == ("built-in, overridden by launcher.toml", False, "my/aider")
    assert listed["mine"] == ("launcher.toml", True, "mine/image")
    assert listed["claude"] == ("built-in", False, "launcher/agent-claude:latest")
    table = cli("agent", "list")
    assert table.exit_code == 0
    assert "* mine" in table.stdout
    assert "aider --message '{prompt}'" in table.stdout
    unknown = cli("run", "--repo", str(case_root), "--agent", "nope", "--prompt", "x")
    assert unknown.exit_code == 6
    assert "no such agent profile" in unknown.stderr

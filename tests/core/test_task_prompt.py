"""A run's prompt from the task's .md, read through the task files port: what a user sees for a
missing, an over-size and an unreadable description, and for an over-size --prompt."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core import agents
from launcher.core.run import RunRequest
from launcher.core.run.plan import task_prompt
from launcher.core.tasks import RepoRef, TaskService
from launcher.errors import InvalidInputError
from launcher.models import TaskRecord


@pytest.fixture
def world(tmp_path: Path) -> Iterator[FakeWorld]:
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def new_task(world: FakeWorld) -> TaskRecord:
    tasks = TaskService(world.store, world.deps.files)
    return tasks.create(RepoRef(name="demo", path=str(world.repo.toplevel)), "Fix it", body="The task's own words.\n")


def prompt_of(world: FakeWorld, task: TaskRecord, prompt: str | None = None) -> str | None:
    return task_prompt(world.deps, RunRequest(task=task.id, prompt=prompt), task)


def test_the_description_is_the_prompt_up_to_the_prompts_own_limit(world: FakeWorld) -> None:
    task = new_task(world)
    md = world.deps.files.md_path(task)
    assert prompt_of(world, task) == md.read_text(encoding="utf-8")
    # Past the pull request's 256 KiB cap, well within the prompt's.
    md.write_bytes(b"x" * agents.PROMPT_MAX)
    assert prompt_of(world, task) == "x" * agents.PROMPT_MAX
    md.unlink()
    assert prompt_of(world, task) is None, "no description: no prompt, not an error"


def test_an_over_size_description_or_prompt_is_refused_with_the_limit(world: FakeWorld) -> None:
    task = new_task(world)
    world.deps.files.md_path(task).write_bytes(b"x" * (agents.PROMPT_MAX + 1))
    with pytest.raises(InvalidInputError, match=f"^the prompt has more than {agents.PROMPT_MAX} bytes\n") as refused:
        prompt_of(world, task)
    assert refused.value.hint == "say it in fewer words"
    with pytest.raises(InvalidInputError, match=f"^the prompt has more than {agents.PROMPT_MAX} bytes\n"):
        prompt_of(world, task, prompt="é" * (agents.PROMPT_MAX // 2 + 1))
    # Bytes that are not UTF-8 count as what they decode to, as the agent gets them.
    world.deps.files.md_path(task).write_bytes(b"\xff" * (agents.PROMPT_MAX // 2))
    with pytest.raises(InvalidInputError, match="the prompt has more than"):
        prompt_of(world, task)


def test_a_description_that_cannot_be_read_is_refused_naming_it(world: FakeWorld) -> None:
    task = new_task(world)
    md = world.deps.files.md_path(task)
    md.unlink()
    md.mkdir()
    with pytest.raises(InvalidInputError, match=f"^task {task.id}: cannot read its description {md}: "):
        prompt_of(world, task)


def test_a_description_that_is_a_symbolic_link_is_not_followed(world: FakeWorld, tmp_path: Path) -> None:
    # The rule the port's read applies to a pull request's body too: a launcher running as root
    # never sends the agent a file the link's maker could not read themselves.
    task = new_task(world)
    md = world.deps.files.md_path(task)
    secret = tmp_path / "secret"
    secret.write_text("not for the agent\n")
    md.unlink()
    md.symlink_to(secret)
    with pytest.raises(InvalidInputError, match=f"^task {task.id}: cannot read its description {md}: .*symbolic link"):
        prompt_of(world, task)

"""The forge token that publishes a run's work never travels into a run, even when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core.run import RunRequest
from launcher.errors import InvalidInputError
from launcher.settings import PublishSettings


def test_a_secret_naming_the_forge_token_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path)
    world.deps.publish = PublishSettings(token_env="FORGE_TOKEN")
    request = RunRequest(task=world.new_task(), network="none", secrets=["FORGE_TOKEN"])
    with pytest.raises(InvalidInputError, match=r"\[publish\] token_env"):
        world.service.plan(request, host_environ={"FORGE_TOKEN": "tok-0123456789abcdef"})
    assert world.store.list_runs() == []


def test_other_secrets_still_pass(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path)
    world.deps.publish = PublishSettings(token_env="FORGE_TOKEN")
    request = RunRequest(task=world.new_task(), network="none", secrets=["DB_PASSWORD"])
    plan = world.service.plan(request, host_environ={"DB_PASSWORD": "hunter2-hunter2"})
    assert plan.secrets == {"DB_PASSWORD": "hunter2-hunter2"}

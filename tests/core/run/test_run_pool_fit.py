"""Which warm pool slot a run may take: only one that gives the agent exactly what it would get anyway."""

from __future__ import annotations

from typing import Any

import pytest
from fakes import BASE, IMAGE_ID, FakeWorld

from launcher.core.run.pool_take import slot_fits
from launcher.core.run.request import RunRequest
from launcher.models import PoolSlot, utcnow


def _slot(world: FakeWorld, **changes: Any) -> PoolSlot:
    fields: dict[str, Any] = {
        "id": "p1",
        "repo": str(world.repo.toplevel),
        "project": "demo",
        "image": "launcher/agent-base:latest",
        "image_id": IMAGE_ID,
        "base_sha": BASE,
        "network": "none",
        "uid": 60000,
        "gid": 60000,
        "container_id": "c" * 64,
        "memory": world.deps.defaults.memory,
        "cpus": world.deps.defaults.cpus,
        "pids_limit": world.deps.defaults.pids_limit,
        "runtime": None,
        "tasks_view": world.deps.tasks_view_mounted(),
        "created_at": utcnow(),
    }
    return PoolSlot(**{**fields, **changes})


def _plan(world: FakeWorld) -> Any:
    return world.service.plan(RunRequest(task=world.new_task(), network="none"), host_environ={})


def test_a_slot_made_for_the_same_repository_image_network_and_limits_fits(world: FakeWorld) -> None:
    assert slot_fits(world.deps, _slot(world), _plan(world))


def test_a_slot_on_another_base_still_fits_the_run_resets_to_its_own(world: FakeWorld) -> None:
    assert slot_fits(world.deps, _slot(world, base_sha="a" * 40), _plan(world))


@pytest.mark.parametrize(
    "changes",
    [
        {"repo": "/elsewhere"},
        {"project": "other"},
        {"image_id": "sha256:" + "0" * 64},
        {"network": "proxied"},
        {"memory": "8g"},
        {"cpus": 4.0},
        {"pids_limit": 64},
        {"runtime": "runsc"},
        {"tasks_view": False},
        {"container_id": None},
    ],
)
def test_a_slot_that_differs_in_what_shapes_the_container_does_not_fit(
    world: FakeWorld, changes: dict[str, Any]
) -> None:
    assert not slot_fits(world.deps, _slot(world, **changes), _plan(world))

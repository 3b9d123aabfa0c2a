"""The cluster suite's fixture: one test cluster (scripts/cluster.sh) for the whole session.

``cluster`` is 3 boxes, a PostgreSQL coordinator and the stand-in forge under a cluster name of
its own (``launcher-test-cluster-<random>``), brought down whatever happened. After every test the
boxes are put back as ``up`` made them (``Cluster.restore``: thawed, running, healed, no skew, the
test's batches stopped), so a test that kills, pauses or cuts a box leaves nothing to the next.

Skipped, saying what is missing, where this machine cannot host a box: no Docker engine, no
debian:bookworm-slim image, or an engine that refuses a box's capabilities.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from clusterkit import Cluster
from helpers import NO_DOCKER, docker_reachable, ensure_agent_image

BOXES = 3
# What the boxes' runs need (--network none): the agent image only. Loading the egress proxy as
# well costs every box ~10 s more; a test that needs it starts a cluster of its own.
BOX_IMAGES = "launcher/agent-base:latest"
BOX_FLAGS = [
    "--cgroupns=private", "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--security-opt", "systempaths=unconfined",
]  # fmt: skip


def _box_refused() -> str | None:
    """Why this engine cannot run a box (its capabilities, its cgroup namespace), or None."""
    if subprocess.run(["docker", "image", "inspect", "debian:bookworm-slim"], capture_output=True).returncode:
        return "this machine lacks the debian:bookworm-slim image (scripts/ensure-base-image.sh makes it)"
    probe = subprocess.run(
        ["docker", "run", "--rm", "--label", "launcher.cluster=probe", "--network", "none", *BOX_FLAGS,
         "debian:bookworm-slim", "sh", "-c", "mount -t tmpfs probe /mnt && umount /mnt"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    if probe.returncode != 0:
        return f"this machine's Docker engine cannot run a cluster box (its capabilities): {probe.stderr.strip()[:300]}"
    return None


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not docker_reachable():
        pytest.skip(NO_DOCKER)
    why = _box_refused()
    if why is not None:
        pytest.skip(why)
    ensure_agent_image()
    logs: Path = tmp_path_factory.mktemp("cluster-logs")
    made = Cluster.named(images=BOX_IMAGES, logs_dir=logs)
    try:
        made.up(BOXES)
        yield made
    finally:
        made.down()


@pytest.fixture(autouse=True)
def _restored(request: pytest.FixtureRequest) -> Iterator[None]:
    """After each test that used the cluster: the boxes as ``up`` made them."""
    yield
    if "cluster" in request.fixturenames:
        made: Cluster = request.getfixturevalue("cluster")
        if made.env:
            made.restore()

"""One way to reach the Docker engine, with errors a user can act on."""

from __future__ import annotations

from typing import Any

from launcher.errors import DockerUnavailableError

API_TIMEOUT_S = 120


def docker_client() -> Any:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=API_TIMEOUT_S)
        client.ping()
    except DockerException as exc:
        raise DockerUnavailableError(
            f"cannot reach the Docker engine: {exc}",
            hint="start Docker (or set DOCKER_HOST) and check that this user may use it",
        ) from exc
    return client

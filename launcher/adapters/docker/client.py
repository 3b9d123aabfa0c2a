"""One way to reach the Docker engine, with errors a user can act on."""

from __future__ import annotations

import time
from typing import Any

from launcher.errors import DockerError, DockerUnavailableError, ImageNotFoundError

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


def image_id(client: Any, ref: str, *, what: str, hint: str) -> str:
    """The ID of a local image, or an error naming it (``what``) and what to do (``hint``)."""
    from docker.errors import APIError, ImageNotFound

    try:
        return str(client.images.get(ref).id)
    except ImageNotFound as exc:
        raise ImageNotFoundError(f"{what} {ref!r} is not in the local Docker engine", hint=hint) from exc
    except APIError as exc:
        raise DockerError(f"cannot inspect image {ref!r}: {exc.explanation or exc}") from exc


def wait_for_output(container: Any, marker: bytes, timeout: float, *, what: str) -> None:
    """Return once ``container`` has printed ``marker``; DockerError naming ``what`` if it stops
    or the deadline passes first. Polled: Docker has no event for "printed a line"."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        output = container.logs(stdout=True, stderr=True)
        if marker in output:
            return
        container.reload()
        tail = output.decode(errors="replace")[-2000:]
        if container.status not in ("created", "running"):
            raise DockerError(f"{what} {container.status} before it was ready: {tail}")
        if time.monotonic() > deadline:
            raise DockerError(f"{what} not ready after {timeout:.0f} s: {tail}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)

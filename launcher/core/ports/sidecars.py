"""What a run's sidecars (its services and its port relay) need of the sandbox beyond a container."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

from launcher.core.ports.sandbox import Sandbox


@runtime_checkable
class SidecarPort(Sandbox, Protocol):
    """A sandbox that can also run a run's services and publish its ports (Docker's can)."""

    def health(self, container_id: str) -> str:
        """``healthy``, ``starting``, ``unhealthy``, ``running`` (no health check), ``exited``, ``gone``."""
        ...

    def exit_status(self, container_id: str) -> int | None: ...

    def image_user(self, ref: str, labels: dict[str, str]) -> str:
        """The user the image runs as, as ``uid:gid``; ``""`` when it names none (root). ``labels``:
        for anything made to find out."""
        ...

    def has_healthcheck(self, ref: str) -> bool: ...

    def save_logs(self, container_id: str, dest: Path, max_bytes: int) -> bool:
        """The container's output into ``dest`` (at most ``max_bytes``); False when it is gone."""
        ...

    def port_free(self, port: int) -> bool:
        """Whether nothing holds ``port`` on 127.0.0.1 of the host the engine publishes on."""
        ...

    def relay_command(self, listeners: dict[int, tuple[str, int]]) -> tuple[list[str], list[str]]:
        """Entrypoint and command of a port relay: listener port -> (address, port) it forwards to."""
        ...

    def remove_named(self, name: str) -> None:
        """Remove the container of that name, if any (idempotent)."""
        ...

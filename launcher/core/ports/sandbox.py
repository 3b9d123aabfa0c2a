"""Where a run executes: one container per run, made from a SandboxSpec."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from launcher.models import ContainerInfo, SandboxSpec


class Sandbox(Protocol):
    def image_id(self, ref: str) -> str: ...

    def create(self, spec: SandboxSpec) -> str: ...

    def start(self, container_id: str) -> None: ...

    def attach(self, container_id: str) -> Iterator[bytes]:
        """The container's output (stdout and stderr, interleaved as written) from now until it
        ends, exactly as written. Connected when this returns: attach before the container can
        write. The container's writes wait while the reader is behind."""
        ...

    def logs(self, container_id: str) -> Iterator[bytes]:
        """Everything the engine kept of the container's output (read after it exited)."""
        ...

    def wait(self, container_id: str, timeout: float | None) -> int | None: ...

    def kill(self, container_id: str) -> None:
        """SIGKILL; returns once the container is dead (or gone)."""
        ...

    def stop(self, container_id: str, grace: float) -> None:
        """SIGTERM to the agent's processes, SIGKILL to the container once ``grace`` seconds passed
        (at once with 0); returns when it has stopped. The run's entry is spared the SIGTERM, so
        it can still bundle the commits the agent made on its way out."""
        ...

    def remove(self, container_id: str) -> None: ...

    def interactive(self, container_id: str, command: list[str], *, user: str, workdir: str) -> int:
        """Run ``command`` in the live container on this terminal (a TTY, stdin attached); its exit status."""
        ...

    def exec_in(
        self, container_id: str, command: list[str], *, user: str, workdir: str, out: Callable[[int, bytes], None]
    ) -> int:
        """Run ``command`` in the live container as ``user`` (its environment, its security profile,
        its network); ``out(1|2, chunk)`` gets its output as it comes. Its exit status."""
        ...

    def inspect_state(self, container_id: str) -> dict[str, Any] | None: ...

    def list(self, labels: dict[str, str]) -> list[ContainerInfo]: ...

    def wait_for_output(self, container_id: str, marker: bytes, timeout: float) -> None:
        """Return once the container has printed ``marker``; DockerError if it exits or times out."""
        ...

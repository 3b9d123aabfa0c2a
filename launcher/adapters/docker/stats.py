"""CPU and memory of live run containers, from the engine's stats stream: one reader thread each.

Why a stream per container and not a call per refresh: the engine's collector samples once a
second, and a non-streaming call waits for its next sample. Measured on engine 20.10 (API
1.41): `stats(stream=False)` took 1.0-2.0 s per container and `one_shot=True` 1.0 s as well
(it only skips the second sample, so it carries no CPU figure either); ten runs would take ten
seconds a refresh. A stream delivers each container's sample every second, with the previous
one in it (CPU is their difference), at the cost of a thread blocked on a socket per container.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from launcher.core.top_view import Usage, usage_of

MAX_STREAMS = 64  # connections the client pools: one per followed container


def stats_client() -> Any:
    """An engine client with room for a stream per container (docker-py pools 10 by default)."""
    import docker

    return docker.from_env(timeout=60, max_pool_size=MAX_STREAMS)


class ContainerStats:
    """The newest sample of each followed container. ``follow`` starts a reader for containers
    new to it and tells those no longer wanted to end (at their next sample, or when the
    container ends and the engine closes the stream). Readers are daemon threads: a process that
    exits does not wait for the engine's next second."""

    def __init__(self, client: Callable[[], Any] = stats_client) -> None:
        self._make_client = client
        self._client: Any = None
        self._lock = threading.Lock()
        self._latest: dict[str, Usage] = {}
        self._stops: dict[str, threading.Event] = {}
        self.error: str | None = None  # why there are no figures (no engine), for the caption

    def follow(self, container_ids: Iterable[str]) -> None:
        wanted = set(container_ids)
        with self._lock:
            for gone in set(self._stops) - wanted:
                self._stops.pop(gone).set()
                self._latest.pop(gone, None)
            new = wanted - set(self._stops)
            for container_id in new:
                self._stops[container_id] = threading.Event()
        if not new or self._engine() is None:
            return
        for container_id in new:
            stop = self._stops[container_id]
            threading.Thread(
                target=self._read, args=(container_id, stop), name=f"stats-{container_id[:12]}", daemon=True
            ).start()

    def usage(self, container_id: str) -> Usage | None:
        with self._lock:
            return self._latest.get(container_id)

    def close(self) -> None:
        with self._lock:
            for stop in self._stops.values():
                stop.set()
            self._stops.clear()

    def _engine(self) -> Any:
        if self._client is None and self.error is None:
            try:
                self._client = self._make_client()
                self._client.ping()
            except Exception as exc:  # any failure to reach the engine: no figures, said once
                self._client, self.error = None, f"no engine stats: {exc}"
        return self._client

    def _read(self, container_id: str, stop: threading.Event) -> None:
        try:
            for sample in self._client.api.stats(container_id, stream=True, decode=True):
                if stop.is_set():
                    return
                usage = usage_of(sample)
                with self._lock:
                    if not stop.is_set():
                        self._latest[container_id] = usage
        except Exception:  # noqa: S110 - a container gone or on another engine: no figures for it
            pass

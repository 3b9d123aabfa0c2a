"""Exiting when no run needs the proxy any more, without ever leaving a starting run without one.

The proxy is idle while no policy file exists (no run, no run being set up) and no connection
is open. After ``idle`` seconds of that it exits with status 0, which the container's restart
policy (on-failure) does not restart. The launcher writes a run's policy file before it makes
sure the proxy runs, so the one race left is a run whose launcher saw the proxy running just
before it exited. A lock file closes it:

- the proxy decides under an exclusive flock on ``IDLE_LOCK`` (in its logs folder), checks
  once more that it is idle, writes ``exiting`` into the file and keeps the lock until the
  process is gone;
- the launcher takes the same lock (after writing the policy) before it looks at the proxy;
  finding ``exiting`` there, it replaces the proxy instead of using it, and it empties the file
  whenever it starts a proxy.

Either the proxy's last check sees the new policy and it stays, or the launcher sees the mark
and starts a new proxy.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sys
from collections.abc import Callable

IDLE_LOCK = ".idle.lock"
EXITING = b"exiting\n"


class IdleExit:
    def __init__(self, logs_dir: str, idle: float, is_idle: Callable[[], bool]) -> None:
        self.path = os.path.join(logs_dir, IDLE_LOCK)
        self.idle = idle
        self.is_idle = is_idle
        self._held: int | None = None  # the lock, kept open until the process ends

    async def wait(self) -> None:
        """Return once the proxy has been idle for ``idle`` seconds and has marked its exit."""
        loop = asyncio.get_running_loop()
        # Checked a few times per idle period: the exit comes at most a quarter late.
        interval = min(self.idle / 4, 5.0)
        idle_since = loop.time()
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            if not self.is_idle():
                idle_since = now
            elif now - idle_since >= self.idle and self._mark_exit():
                return
            elif now - idle_since >= self.idle:
                idle_since = now  # a launcher held the lock, or a run arrived meanwhile

    def _mark_exit(self) -> bool:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            print(f"egress proxy: cannot open {IDLE_LOCK}, staying up: {exc}", file=sys.stderr, flush=True)
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)  # a launcher is attaching a run right now
            return False
        if not self.is_idle():
            os.close(fd)  # closing drops the lock
            return False
        os.ftruncate(fd, 0)
        os.write(fd, EXITING)
        self._held = fd
        print(f"egress proxy: no run for {self.idle:g}s, exiting", file=sys.stderr, flush=True)
        return True

"""Inter-process file locks (fcntl.flock) with a deadline.

flock locks belong to the open file description, so they are released by the kernel when
the holder dies, even by SIGKILL: a crashed launcher never leaves a lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from launcher.errors import LockedResource, LockTimeoutError

_CONTENTION = {errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK}


@contextmanager
def file_lock(
    path: Path, *, timeout: float = 60.0, max_delay: float = 0.05, guards: LockedResource = "store"
) -> Iterator[None]:
    """Hold ``path``'s lock; a LockTimeoutError after ``timeout`` names what it ``guards`` (its exit code)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        _acquire(fd, path, timeout, max_delay, guards)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def lock_is_held(path: Path) -> bool:
    """Whether some process holds ``path``'s lock now (False when the file does not exist)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in _CONTENTION:
            return True
        raise
    finally:
        os.close(fd)
    return False


def lock_within(fd: int, path: Path, timeout: float, *, max_delay: float = 0.05) -> bool:
    """Take ``fd``'s lock (exclusive) within ``timeout`` seconds; False when it stayed held."""
    try:
        lock_fd(fd, path, timeout, max_delay=max_delay)
    except LockTimeoutError:
        return False
    return True


def lock_fd(fd: int, path: Path, timeout: float, *, max_delay: float = 0.05, guards: LockedResource = "store") -> None:
    """Take ``fd``'s lock (exclusive) within ``timeout`` seconds, or a LockTimeoutError naming
    what it ``guards``; for locks whose descriptor outlives a ``with`` (handed to a child)."""
    _acquire(fd, path, timeout, max_delay, guards)


def _acquire(fd: int, path: Path, timeout: float, max_delay: float, guards: LockedResource) -> None:
    started = time.monotonic()
    deadline = started + timeout
    delay = 0.001
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except OSError as exc:
            if exc.errno not in _CONTENTION:
                raise
        now = time.monotonic()
        if now >= deadline:
            raise LockTimeoutError(str(path), now - started, guards)
        # Polling, because a blocking flock cannot honour a deadline; the backoff keeps
        # 16 contending processes from burning both cores.
        time.sleep(min(delay, deadline - now))
        delay = min(delay * 2, max_delay)

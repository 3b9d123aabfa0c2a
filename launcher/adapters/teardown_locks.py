"""Teardown locks: one flock file per run being taken apart, under ``.launcher/teardown/``.

flock belongs to the open file description, which a forked child shares: the run's process
takes the lock, forks the child that does the teardown, and closes its own descriptor without
unlocking, so the lock is the child's alone from then on and the kernel lets go of it when the
child dies, however it dies. A file whose lock nobody holds is a teardown that ended (or died);
waiters remove it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

from launcher.adapters.locks import lock_fd, lock_is_held, lock_within
from launcher.core.ports.teardown import TeardownHold

SUFFIX = ".lock"
# How long a second settle of one run waits for the first's teardown.
HOLD_TIMEOUT_S = 120.0


class FlockHold:
    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self._path = path

    def release(self) -> None:
        if self._fd is None:
            return
        # Unlinked while still locked: a waiter that opened it sees the end; one that comes
        # later finds no file, nothing in progress.
        with contextlib.suppress(FileNotFoundError):
            self._path.unlink()
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def hand_over(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # never LOCK_UN: that would unlock the child's shared description
            self._fd = None


class TeardownLocks:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _path(self, run_id: str) -> Path:
        return self.folder / f"{run_id}{SUFFIX}"

    def hold(self, run_id: str) -> TeardownHold:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(run_id)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            # Held by someone else only when two settle one run at once (a gc and its launcher):
            # the second waits for the first's teardown rather than racing it.
            lock_fd(fd, path, HOLD_TIMEOUT_S)
        except BaseException:
            os.close(fd)
            raise
        return FlockHold(fd, path)

    def held(self, run_id: str) -> bool:
        return lock_is_held(self._path(run_id))

    def wait(self, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        still: list[str] = []
        for path in sorted(self.folder.glob(f"*{SUFFIX}")) if self.folder.is_dir() else []:
            try:
                fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                continue  # ended meanwhile
            try:
                if not lock_within(fd, path, max(0.0, deadline - time.monotonic())):
                    still.append(path.name.removesuffix(SUFFIX))
                    continue
                # Ours now: the teardown ended, or died. Forget the file if it is still this one.
                with contextlib.suppress(FileNotFoundError):
                    if os.stat(path).st_ino == os.fstat(fd).st_ino:
                        path.unlink()
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)
        return still

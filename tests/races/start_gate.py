"""The start gate of a race: workers block on it, without polling, until the test opens it.

The test holds an exclusive flock on ``BARRIER/gate`` from before it starts the workers
(``closed_gate``). Each worker, once it has done its imports, says so (``BARRIER/ready-INDEX``)
and blocks taking a shared lock on the gate (``wait_at_gate``). When the test has seen every
``ready-*`` it opens the gate: the kernel wakes all the waiting workers at once, and a worker that
arrives later passes straight through. A gate never opened ends a worker after its timeout.
"""

from __future__ import annotations

import fcntl
import math
import os
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

GATE = "gate"


@contextmanager
def closed_gate(barrier: Path) -> Iterator[Callable[[], None]]:
    """The gate, closed until the function yielded is called (or the block ends)."""
    fd = os.open(barrier / GATE, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    opened = False

    def open_gate() -> None:
        nonlocal opened
        if not opened:
            opened = True
            fcntl.flock(fd, fcntl.LOCK_UN)

    try:
        yield open_gate
    finally:
        open_gate()
        os.close(fd)


def wait_at_gate(barrier: Path, index: int, timeout_s: float) -> None:
    (barrier / f"ready-{index}").touch()

    def never_opened(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit("start gate never opened")

    previous = signal.signal(signal.SIGALRM, never_opened)
    fd = os.open(barrier / GATE, os.O_RDONLY | os.O_CLOEXEC)
    try:
        signal.alarm(math.ceil(timeout_s))
        fcntl.flock(fd, fcntl.LOCK_SH)
        signal.alarm(0)
    finally:
        signal.signal(signal.SIGALRM, previous)
        os.close(fd)

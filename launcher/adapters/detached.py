"""Work that outlives the launcher process: done in a forked child of its own session."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable


def run_in_child(work: Callable[[], None]) -> int | None:
    """Fork; the child does ``work`` and exits, the caller goes on at once: the child's pid (a
    caller that outlives it reaps it), or None when no child could be made (nothing was done).

    The child has its own session (a Ctrl-C or a job cancel aimed at the caller's process group
    does not cut it short) and /dev/null for stdio, so whoever waits for the caller's output
    (a shell's pipe, a CI runner) is not kept waiting for the child. It ends with ``os._exit``:
    none of the caller's exit handlers, buffers or connections run twice.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    try:
        pid = os.fork()
    except OSError:
        return None
    if pid:
        return pid
    code = 0
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        work()
    except BaseException:  # nobody is left to tell: what is left behind is gc's
        code = 1
    finally:
        os._exit(code)

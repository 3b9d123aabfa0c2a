"""Is the process that owns a run still alive? pid plus start time, so a reused pid never counts."""

from __future__ import annotations

import os
import socket

from launcher.models import RunOwner


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks; None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            raw = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses; fields resume after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):
        return None  # killed and not yet reaped: it will never renew anything again
    return int(fields[19])


def current_owner() -> RunOwner:
    pid = os.getpid()
    return RunOwner(host=socket.gethostname(), pid=pid, start_ticks=start_ticks(pid))


def owner_alive(owner: RunOwner | None) -> bool | None:
    """True/False for an owner on this host; None when it lives elsewhere and cannot be checked."""
    if owner is None:
        return False
    if owner.host != socket.gethostname():
        return None
    ticks = start_ticks(owner.pid)
    if ticks is None:
        return False
    return owner.start_ticks is None or ticks == owner.start_ticks

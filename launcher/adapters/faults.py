"""Test-only fault points. Inert unless LAUNCHER_TEST_FAULTS is set.

    LAUNCHER_TEST_FAULTS="sandbox.create=2,git.worktree=1"   # fail the first N calls
    LAUNCHER_TEST_FAULTS="kill@run.after_start"                  # SIGKILL this process there

The failures raised are the ones the real adapters raise (DockerError, GitLockContentionError),
so the code under test cannot tell an injected fault from a real one.
"""

from __future__ import annotations

import os
import signal
import threading

from launcher.errors import DockerError, GitLockContentionError, LauncherError

ENV = "LAUNCHER_TEST_FAULTS"
_lock = threading.Lock()
_remaining: dict[str, int] | None = None


def _plan() -> dict[str, int]:
    global _remaining
    if _remaining is None:
        _remaining = {}
        for item in filter(None, (part.strip() for part in os.environ.get(ENV, "").split(","))):
            if item.startswith("kill@"):
                _remaining[item] = -1
            else:
                point, _, count = item.partition("=")
                _remaining[point] = int(count or "1")
    return _remaining


def fault_point(point: str) -> None:
    if ENV not in os.environ:
        return
    with _lock:
        plan = _plan()
        if f"kill@{point}" in plan:
            os.kill(os.getpid(), signal.SIGKILL)
        left = plan.get(point, 0)
        if left <= 0:
            return
        plan[point] = left - 1
    raise _fault_for(point)


def _fault_for(point: str) -> LauncherError:
    if point.startswith("git."):
        return GitLockContentionError(f"injected fault at {point}: Unable to create 'index.lock': File exists")
    if point.startswith("sandbox."):
        return DockerError(f"injected fault at {point}: 500 Server Error")
    return LauncherError(f"injected fault at {point}")

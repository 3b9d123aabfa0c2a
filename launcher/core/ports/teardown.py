"""Which settled runs are still being taken apart: their container, network and folders.

A run's result is recorded before what it no longer needs is removed (launcher/core/run/
teardown.py). Whoever else removes a settled run's leftovers (gc, `launcher rm`) asks here
first, so two removers never work on one run at once.
"""

from __future__ import annotations

from typing import Protocol


class TeardownHold(Protocol):
    """Held from just before the run's ending is recorded until its teardown is done."""

    def release(self) -> None:
        """The teardown is done: others may look at what is left (normally nothing)."""
        ...

    def hand_over(self) -> None:
        """Let go of this process's hold without ending it: a forked child that inherited it
        holds it on alone (and releases it when it is done, or dies)."""
        ...


class TeardownLocksPort(Protocol):
    def hold(self, run_id: str) -> TeardownHold: ...

    def held(self, run_id: str) -> bool:
        """Whether a live process is taking the run apart now."""
        ...

    def wait(self, timeout: float) -> list[str]:
        """Wait (at most ``timeout`` seconds in all) for every teardown in progress to end; the
        runs whose teardown still is, and forget those a dead process left."""
        ...


class _NoHold:
    def release(self) -> None:
        return None

    def hand_over(self) -> None:
        return None


class NoTeardownLocks:
    """No other remover to keep out (fast tests of decisions)."""

    def hold(self, run_id: str) -> TeardownHold:
        return _NoHold()

    def held(self, run_id: str) -> bool:
        return False

    def wait(self, timeout: float) -> list[str]:
        return []

"""Teardown locks: held by a forked child the run's process handed its hold to, released when
the child is done or dies, and waited for by gc (real processes, real flock)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.adapters import teardown_locks
from launcher.adapters.detached import run_in_child
from launcher.adapters.teardown_locks import TeardownLocks
from launcher.errors import LockTimeoutError


def _child_that_waits(go_read: int, done_write: int, release: bool, hold: object) -> None:
    os.read(go_read, 1)  # blocks until the test says go
    if release:
        hold.release()  # type: ignore[attr-defined]
    os.write(done_write, b"x")


def _handed_to_a_child(locks: TeardownLocks, run_id: str, *, release: bool) -> tuple[int, int, int]:
    """The run's hold, taken here and handed to a forked child as `launcher run` does when it
    exits; the child's pid, the pipe end that tells it to go on, and the one it answers on."""
    hold = locks.hold(run_id)
    go_read, go_write = os.pipe()
    done_read, done_write = os.pipe()
    child = run_in_child(lambda: _child_that_waits(go_read, done_write, release, hold))
    assert child is not None
    hold.hand_over()
    return child, go_write, done_read


def test_the_forked_child_holds_the_lock_alone_until_it_releases_it(tmp_path: Path) -> None:
    locks = TeardownLocks(tmp_path / "teardown")
    child, go, done = _handed_to_a_child(locks, "demo-1.1", release=True)
    assert locks.held("demo-1.1"), "the child holds it on alone"
    assert locks.wait(0.2) == ["demo-1.1"], "a teardown still going is named, not waited for past the deadline"
    os.write(go, b"x")
    assert os.read(done, 1) == b"x"
    assert locks.wait(30) == []
    assert os.waitpid(child, 0)[1] == 0
    assert not locks.held("demo-1.1")
    assert not list((tmp_path / "teardown").iterdir()), "a released lock leaves no file"


def test_a_child_that_dies_lets_go_and_its_file_is_forgotten_by_the_next_wait(tmp_path: Path) -> None:
    locks = TeardownLocks(tmp_path / "teardown")
    # The child never releases: it exits (as a SIGKILLed teardown would, without a word).
    child, go, done = _handed_to_a_child(locks, "demo-2.1", release=False)
    assert locks.held("demo-2.1")
    os.write(go, b"x")
    assert os.read(done, 1) == b"x"
    os.waitpid(child, 0)
    assert locks.wait(30) == [], "the kernel let go of it when the child died"
    assert not (tmp_path / "teardown" / "demo-2.1.lock").exists()


def test_a_second_hold_on_one_run_waits_then_says_whose_lock_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    locks = TeardownLocks(tmp_path / "teardown")
    first = locks.hold("demo-4.1")
    monkeypatch.setattr(teardown_locks, "HOLD_TIMEOUT_S", 0.1)
    # flock is per open file: a second hold in this process contends as a second settle would.
    with pytest.raises(LockTimeoutError) as raised:
        locks.hold("demo-4.1")
    assert "demo-4.1.lock" in str(raised.value)
    first.release()
    locks.hold("demo-4.1").release()
    assert not (tmp_path / "teardown" / "demo-4.1.lock").exists()


def test_waiting_with_nothing_in_progress_makes_nothing(tmp_path: Path) -> None:
    locks = TeardownLocks(tmp_path / "teardown")
    assert locks.wait(1) == []
    assert not locks.held("demo-3.1")
    assert not (tmp_path / "teardown").exists()

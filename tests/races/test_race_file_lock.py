"""launcher's file lock under contention, in the shape of filelock's strict stress test.

N fresh interpreters are released together by a start barrier; each increments a counter
file N_ROUNDS times under `launcher.adapters.locks.file_lock`. Inside the lock a worker
creates an "occupied" marker with O_EXCL, so two holders at once are caught in the act, and
the counter is a plain read-modify-write, so any overlap the marker missed shows up as a lost
update. The race has an overall deadline; stuck workers are killed in a `finally`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from race_harness import race

from launcher.adapters.locks import file_lock
from launcher.errors import LockTimeoutError

WORKERS = 12
ROUNDS = 150


@pytest.mark.slow
def test_file_lock_admits_one_holder_at_a_time(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "counter.lock"  # parent created by file_lock itself
    counter = tmp_path / "counter"
    counter.write_text("0")
    occupied = tmp_path / "occupied"
    args = {"lock": str(lock), "counter": str(counter), "occupied": str(occupied), "rounds": ROUNDS}

    outcomes = race(tmp_path / "race", [("lock-counter", args)] * WORKERS, deadline_s=90)

    for outcome in outcomes:
        assert outcome.returncode == 0, outcome.stderr[-3000:]
    assert [o.report["overlaps"] for o in outcomes] == [0] * WORKERS
    assert int(counter.read_text()) == WORKERS * ROUNDS
    assert not occupied.exists()


def test_file_lock_gives_up_on_its_deadline_naming_the_lock(tmp_path: Path) -> None:
    """A second holder waits no longer than its timeout and says which lock it waited for."""
    lock = tmp_path / "held.lock"
    with file_lock(lock), pytest.raises(LockTimeoutError) as caught, file_lock(lock, timeout=0.2):
        pytest.fail("the lock was taken twice")
    assert caught.value.path == str(lock)
    assert str(lock) in str(caught.value)
    assert isinstance(caught.value, TimeoutError)
    # Released on the way out: it can be taken again at once.
    with file_lock(lock, timeout=0.0):
        pass


def test_file_lock_refuses_a_symlinked_lock_file(tmp_path: Path) -> None:
    """The lock file is opened with O_NOFOLLOW: a planted symlink is never followed."""
    target = tmp_path / "victim"
    target.write_text("precious")
    link = tmp_path / "planted.lock"
    link.symlink_to(target)
    with pytest.raises(OSError), file_lock(link, timeout=0.1):
        pass
    assert target.read_text() == "precious"

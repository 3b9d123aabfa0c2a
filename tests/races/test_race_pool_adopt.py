"""A pool slot's worktree moves to its run while other runs settle and prune worktrees.

Between the move and `git worktree repair`, the repository's record of the worktree names a
folder that is gone; a `git worktree prune` at that moment (another run settling) would drop
the record and the run would fail. launcher moves and repairs under the repository's lock,
which every prune takes too. Here a second process prunes in a tight loop while slots move.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helpers import make_repo

from launcher.adapters.git import Repository

SLOTS = 12
PRUNERS = 4  # enough that one of them holds the repository's lock most of the time
PRUNER = """
import sys
from pathlib import Path
from launcher.adapters.git import Repository
repo = Repository.open(sys.argv[1], lock_dir=Path(sys.argv[2]))
ready, stop = Path(sys.argv[3]), Path(sys.argv[4])
ready.touch()
rounds = 0
while not stop.exists():
    repo.prune_worktrees()
    rounds += 1
print(rounds)
"""


def test_slots_move_to_their_runs_while_another_process_prunes(tmp_path: Path) -> None:
    repo_dir = make_repo(tmp_path / "repo")
    locks = tmp_path / "locks"
    repo = Repository.open(repo_dir, lock_dir=locks)
    base = repo.resolve_commit("HEAD")
    pool, runs = tmp_path / "worktrees" / ".pool", tmp_path / "worktrees"
    pool.mkdir(parents=True)
    for n in range(SLOTS):
        repo.add_detached_worktree(pool / f"p{n}", base)
    stop = tmp_path / "pruner-stop"
    pruners = [
        subprocess.Popen(
            [sys.executable, "-c", PRUNER, str(repo_dir), str(locks), str(tmp_path / f"ready-{i}"), str(stop)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(PRUNERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < PRUNERS:
            assert all(p.poll() is None for p in pruners), "a pruner died"
            assert time.monotonic() < deadline, "the pruners did not start"
            time.sleep(0.01)
        for n in range(SLOTS):
            repo.adopt_worktree(pool / f"p{n}", runs / f"run-{n}", f"launcher/t-{n}/1", base)
    finally:
        stop.touch()
        outs = [p.communicate(timeout=60)[0] for p in pruners]
    assert [p.returncode for p in pruners] == [0] * PRUNERS
    assert sum(int(out) for out in outs) > 0, "the pruners pruned while slots moved"
    listed = repo.worktree_paths()
    for n in range(SLOTS):
        assert str(runs / f"run-{n}") in listed
        admin = repo.worktree_admin(runs / f"run-{n}")
        assert admin is not None
        assert (admin / "HEAD").read_text() == f"ref: refs/heads/launcher/t-{n}/1\n"

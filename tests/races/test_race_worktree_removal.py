"""A run's worktree is removed while other runs take pool slots (`git worktree repair`).

`git worktree repair` rewrites the `.git` file of every worktree whose folder exists. A folder
deleted file by file outside the repository's lock can get a fresh `.git` between two deletions:
the deletion then fails with "Directory not empty" and the repository keeps the worktree's
record (seen as a flaky `tests/pool` run under load). launcher takes the folder out under the
lock (one rename, then the prune) and deletes it afterwards. Here processes repair in a tight
loop while worktrees full of files are removed.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from helpers import make_repo

from launcher.adapters.git import Repository
from launcher.adapters.workspace import remove_tree

WORKTREES = 6
FILES = 400  # enough that deleting one takes longer than a repair
REPAIRERS = 2
REPAIRER = """
import sys
import time
from pathlib import Path
from launcher.adapters.git import Repository
repo = Repository.open(sys.argv[1], lock_dir=Path(sys.argv[2]))
ready, stop, anchor = Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]
ready.touch()
rounds = 0
while not stop.exists():
    with repo.locked():  # as a pool slot's hand-over repairs the worktree it moved
        repo.git("worktree", "repair", anchor)
    rounds += 1
    time.sleep(0.002)  # leave the lock to others between hand-overs, as real runs do
print(rounds)
"""


def test_worktrees_are_removed_whole_while_other_processes_repair(tmp_path: Path) -> None:
    repo_dir = make_repo(tmp_path / "repo")
    locks = tmp_path / "locks"
    repo = Repository.open(repo_dir, lock_dir=locks)
    base = repo.resolve_commit("HEAD")
    worktrees = tmp_path / "worktrees"
    anchor = worktrees / "slot-taken"  # the worktree the repairers' "hand-overs" repair
    anchor.mkdir(parents=True)
    repo.add_worktree(anchor, "launcher/anchor/1", base)
    stop = tmp_path / "repairers-stop"
    repairers = [
        subprocess.Popen(
            [
                *(sys.executable, "-c", REPAIRER, str(repo_dir), str(locks)),
                *(str(tmp_path / f"ready-{i}"), str(stop), str(anchor)),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(REPAIRERS)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < REPAIRERS:
            assert all(p.poll() is None for p in repairers), "a repairer died"
            assert time.monotonic() < deadline, "the repairers did not start"
            time.sleep(0.01)
        for n in range(WORKTREES):
            path = worktrees / f"run-{n}"
            path.mkdir(parents=True)
            repo.add_worktree(path, f"launcher/t-{n}/1", base)
            for f in range(FILES):
                target = path / f"d{f % 20}" / f"f{f}.txt"
                target.parent.mkdir(exist_ok=True)
                target.write_text("x")
            trash = worktrees / f".trash-run-{n}-0000"
            repo.retire_worktree(path, trash)
            remove_tree(trash)
            assert not path.exists()
            assert not trash.exists()
    finally:
        stop.touch()
        outs = [p.communicate(timeout=60)[0] for p in repairers]
    assert [p.returncode for p in repairers] == [0] * REPAIRERS
    assert sum(int(out) for out in outs) > 0, "the repairers repaired while worktrees were removed"
    assert repo.worktree_paths() == [str(repo_dir), str(anchor)], "every removed worktree's record is gone"

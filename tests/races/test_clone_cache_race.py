"""Runs on one fresh root all need the same repository by URL at once: one clone, then fetches.

Fresh interpreters released together by a start barrier each ask the clone cache for the
repository, half of them by another spelling of its URL. Inside the clone step each worker
holds an "occupied" marker (O_EXCL: a second holder at once is caught) and counts its clone;
the count must end at exactly one, every worker must get the same folder at the remote's
commit, and no half-made clone may be left. A second round, after a push, races the fetches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from helpers import git, make_repo
from start_gate import closed_gate

WORKERS = 6
DEADLINE_S = 120.0
FILES = 1500  # enough that a clone takes long enough for unlocked clones to overlap
WORKER = """
import json, os, sys, time
from pathlib import Path
from launcher.adapters.clone_cache import CloneCache
from launcher.core.repos import normalise_url

state, barrier, index, url = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], sys.argv[4]
occupied, clones_made, overlaps = barrier / "occupied", barrier / "clones-made", barrier / "overlaps"

class Watched(CloneCache):
    def _clone(self, url, folder):
        try:
            fd = os.open(occupied, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            with open(overlaps, "a") as out:
                out.write(index + "\\n")
            raise
        try:
            with open(clones_made, "a") as out:
                out.write(index + "\\n")
            super()._clone(url, folder)
        finally:
            os.close(fd)
            os.unlink(occupied)

cache = Watched(state / "clones", state / "locks")
(barrier / f"ready-{index}").touch()
import fcntl  # the start gate (tests/races/start_gate.py): blocks until the test opens it
fcntl.flock(os.open(barrier / "gate", os.O_RDONLY), fcntl.LOCK_SH)
folder = cache.sync(url, normalise_url(url))
import subprocess
head = subprocess.run(["git", f"--git-dir={folder / '.git'}", "rev-parse", "HEAD"],
                      capture_output=True, text=True, check=True, cwd="/").stdout.strip()
print(json.dumps({"folder": str(folder), "head": head}))
"""


def _race(state: Path, barrier: Path, urls: list[str]) -> list[dict[str, str]]:
    barrier.mkdir()
    with closed_gate(barrier) as open_gate:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CASE_ROOT", "LAUNCHER_"))}
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(state), str(barrier), str(i), url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
            )
            for i, url in enumerate(urls)
        ]
        deadline = time.monotonic() + DEADLINE_S
        try:
            while len(list(barrier.glob("ready-*"))) < len(procs):
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, f"a worker died before the start: {dead[0].communicate()[1].decode()[-2000:]}"
                assert time.monotonic() < deadline, "workers did not reach the start barrier in time"
                time.sleep(0.01)
            open_gate()
            reports = []
            for proc in procs:
                out, err = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
                assert proc.returncode == 0, f"a worker failed: {err.decode()[-3000:]}"
                reports.append(json.loads(out.decode().strip().splitlines()[-1]))
            return reports
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_concurrent_runs_share_one_clone_and_fetch_in_turn(tmp_path: Path) -> None:
    source = make_repo(tmp_path / "source", {f"src/f{i:04}.txt": f"{i}\n" for i in range(FILES)})
    remote = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(source), str(remote), cwd=tmp_path)
    state = tmp_path / "case" / ".launcher"
    spellings = [str(remote), "file://" + str(remote) + "/"]
    urls = [spellings[i % 2] for i in range(WORKERS)]

    first = _race(state, tmp_path / "barrier-1", urls)
    head = git("rev-parse", "HEAD", cwd=source).strip()
    assert _lines(tmp_path / "barrier-1" / "overlaps") == []
    assert len(_lines(tmp_path / "barrier-1" / "clones-made")) == 1
    assert {r["folder"] for r in first} == {str(next((state / "clones").iterdir()))}
    assert {r["head"] for r in first} == {head}
    assert [p.name for p in (state / "clones").iterdir()] == [Path(first[0]["folder"]).name]

    (source / "NEW").write_text("after the clone\n")
    git("add", "NEW", cwd=source)
    git("commit", "-q", "-m", "newer", cwd=source)
    git("push", "-q", str(remote), "main", cwd=source)
    second = _race(state, tmp_path / "barrier-2", urls)
    newer = git("rev-parse", "HEAD", cwd=source).strip()
    assert _lines(tmp_path / "barrier-2" / "clones-made") == []
    assert {r["head"] for r in second} == {newer}
    assert {r["folder"] for r in second} == {first[0]["folder"]}
    fsck = subprocess.run(
        ["git", f"--git-dir={Path(first[0]['folder']) / '.git'}", "fsck", "--no-dangling"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert fsck.returncode == 0, fsck.stderr

"""harvest: launcher's peak memory while it harvests a big bundle, against `git fetch` of the same bundle.

launcher:  `launcher run --network none` of a task whose agent commits SIZE of random bytes (five
           files; 500 MB, quick: 100 MB), so its bundle is about SIZE. First figure: the peak
           resident set of the launcher process itself (`getrusage(RUSAGE_SELF)` as it exits,
           through a wrapper that runs launcher's CLI in the same process); its harvest is where
           its memory would grow with the bundle. Second figure: the largest process of the
           whole run, launcher or a git it ran (GNU time's %M over the process tree).
bare:      `git -c transfer.fsckObjects=true fetch` (the check any import of untrusted objects
           needs) of the bundle the run kept (`.launcher/runs/<run>/run.bundle`) into a fresh
           bare clone of the repository's base, under GNU time: the largest process of its tree.

GNU time measures from a small parent on purpose: a process forked from Python counts
Python's resident pages at the fork in its own peak. Each sample gets a repository and case
root of its own (a sample leaves about 3 x SIZE on disk, removed before the next). Needs
/usr/bin/time (Debian: apt-get install time).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import statistics
from pathlib import Path

from benchmarks.common import BenchmarkError, BenchResult, Context, Figure, Target, make_repo

MB = 1000 * 1000
# A launcher that streams the bundle stays near its size without one; 256 MiB leaves room for
# the interpreter and its imports (about 60 MiB) and nothing proportional to the bundle.
LAUNCHER_RSS_TARGET = Target("max", 256)
RSS_MARKER = "LAUNCHER_BENCH_RSS_KB="
TREE_MARKER = "LAUNCHER_BENCH_TREE_KB="
TIME = Path("/usr/bin/time")
# launcher's CLI in this process, and its own peak printed as it exits.
WRAPPER = f"""
import atexit, resource, sys
atexit.register(lambda: sys.stderr.write("{RSS_MARKER}%d\\n" % resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
from launcher.cli import main
main(sys.argv[1:])
"""


def agent_command(size: int) -> list[str]:
    part = size // 5
    return [
        "sh",
        "-c",
        "set -eu; for i in 1 2 3 4 5; do head -c "
        f"{part} /dev/urandom > blob$i.bin; done; git add blob*.bin; git commit -qm 'big work'",
    ]


def run(ctx: Context) -> BenchResult:
    if not TIME.is_file():
        raise BenchmarkError(f"{TIME} (GNU time) is missing: apt-get install time")
    size = (100 if ctx.options.quick else 500) * MB
    repeats = ctx.repeats(full=3, quick=1)
    own, tree, bare, bundles = [], [], [], []
    for i in range(repeats):
        sample = ctx.tmp / "harvest" / f"sample-{i}"
        repo = make_repo(sample / "repo", 20)
        root = ctx.case_root(f"harvest-{i}")
        (task,) = ctx.create_tasks(root, repo, "Big harvest", 1, agent_command(size))
        done = ctx.run(
            [
                str(TIME),
                "-f",
                f"{TREE_MARKER}%M",
                str(ctx.python),
                "-c",
                WRAPPER,
                "--root",
                str(root),
                "run",
                "--network",
                "none",
                task,
            ]
        )
        bundle = _harvested_bundle(root)
        bundles.append(bundle.stat().st_size)
        # A fresh repository of the base only (--no-local: a local clone would hard-link the run's
        # objects, harvested into the repository already, and leave the fetch nothing to do).
        clone = sample / "bare.git"
        ctx.run(["git", "clone", "-q", "--bare", "--no-local", "--single-branch", "-b", "main", str(repo), str(clone)])
        fetch = ["git", f"--git-dir={clone}", "-c", "transfer.fsckObjects=true", "fetch", "-q", "--no-tags"]
        fetched = ctx.run([str(TIME), "-f", f"{TREE_MARKER}%M", *fetch, str(bundle), "+HEAD:refs/heads/fetched"])
        own.append(int(_marker(done.stderr, RSS_MARKER)) / 1024)
        tree.append(int(_marker(done.stderr, TREE_MARKER)) / 1024)
        bare.append(int(_marker(fetched.stderr, TREE_MARKER)) / 1024)
        shutil.rmtree(sample)
        shutil.rmtree(root / ".launcher" / "runs", ignore_errors=True)
    mb = size // MB
    note = f"bundle {statistics.median(bundles) / MB:.0f} MB (median of {len(bundles)})"
    bare_label = "git fetch (fsck) of the same bundle"
    result = BenchResult("harvest")
    result.figures += [
        Figure(
            "harvest",
            f"harvest {mb} MB bundle: launcher process peak RSS (MiB)",
            "count",
            own,
            bare,
            bare_label,
            target=LAUNCHER_RSS_TARGET,
            note=note,
        ),
        Figure("harvest", f"harvest {mb} MB bundle: largest process of the run (MiB)", "count", tree, bare, bare_label),
    ]
    result.details["harvest"] = {
        "bundle_bytes": bundles,
        "launcher_rss_mib": own,
        "largest_process_mib": tree,
        "git_fetch_rss_mib": bare,
    }
    return result


def _marker(stderr: str, marker: str) -> str:
    for line in stderr.splitlines():
        if line.startswith(marker):
            return line[len(marker) :].strip()
    raise BenchmarkError(f"no {marker} line in the output: {stderr[-400:]!r}")


def _harvested_bundle(root: Path) -> Path:
    """The bundle of the root's one run, which must have ended `exited` with its commit on the branch."""
    with sqlite3.connect(root / ".launcher" / "state.db") as db:
        rows = db.execute("SELECT id, state, details FROM runs").fetchall()
    if len(rows) != 1:
        raise BenchmarkError(f"expected one run in {root}, found {len(rows)}")
    run_id, state, details = rows[0]
    harvest = json.loads(details or "{}").get("harvest") or {}
    if state != "exited" or not harvest.get("commits"):
        raise BenchmarkError(f"run {run_id} ended {state} without its commit on the branch: {harvest}")
    bundle = root / ".launcher" / "runs" / run_id / "run.bundle"
    if not bundle.is_file():
        raise BenchmarkError(f"run {run_id} kept no bundle at {bundle}")
    return bundle

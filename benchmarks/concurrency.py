"""concurrency: N trivial runs started together, against N bare `docker run --rm <image> true`.

launcher:  N `launcher --root <temp root> run <task-i>` processes (N tasks with the command
           `true` on a small generated repository), all started in a tight loop.
bare:      N `docker run --rm <image> true` processes started the same way.

The figure is the wall time from the first process start to the last exit.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from benchmarks.common import IMAGE, PROCESS_TIMEOUT_S, BenchResult, Context, Figure, Target

N_FULL = 50
N_QUICK = 8
SMALL_REPO_FILES = 20
TARGET = Target("ratio_max", 1.3)


def run(ctx: Context) -> BenchResult:
    n = N_QUICK if ctx.options.quick else N_FULL
    repeats = ctx.repeats(full=3, quick=2)
    repo = ctx.repo(SMALL_REPO_FILES)
    root = ctx.case_root("concurrency")
    tasks = ctx.create_tasks(root, repo, "concurrent", n, ["true"])
    launcher_argvs = [[*ctx.launcher, "--root", str(root), "run", t] for t in tasks]
    bare_argvs = [["docker", "run", "--rm", *ctx.bare_labels(), IMAGE, "true"] for _ in range(n)]
    _burst(ctx, launcher_argvs[:1])  # warm-up
    _burst(ctx, bare_argvs[:1])
    walls: dict[str, list[float]] = {"launcher": [], "bare": []}
    failures: dict[str, list[float]] = {"launcher": [], "bare": []}
    errors: list[str] = []
    for i in range(repeats):
        pair = [("launcher", launcher_argvs), ("bare", bare_argvs)]
        for kind, argvs in pair if i % 2 == 0 else pair[::-1]:
            wall, failed = _burst(ctx, argvs)
            walls[kind].append(wall)
            failures[kind].append(float(len(failed)))
            errors += [f"{kind}: {e}" for e in failed[:3]]
    result = BenchResult("concurrency")
    result.figures += [
        Figure(
            "concurrency",
            f"{n} concurrent runs: wall",
            "s",
            walls["launcher"],
            walls["bare"],
            f"{n} x docker run --rm {IMAGE} true",
            target=TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: failed runs",
            "count",
            failures["launcher"],
            failures["bare"],
            "failed docker runs",
            target=Target("equals", 0),
        ),
    ]
    result.details["concurrency"] = {
        "runs": n,
        "repeats": repeats,
        "repo_files": SMALL_REPO_FILES,
        "walls": walls,
        "failures": failures,
        "errors": errors,
    }
    if errors:
        result.reports.append("concurrency: failed runs:\n  " + "\n  ".join(errors))
    return result


def _burst(ctx: Context, argvs: list[list[str]]) -> tuple[float, list[str]]:
    """Start every process at once; the wall time until the last exits, and what failed."""
    logs = ctx.tmp / "burst-logs"
    logs.mkdir(exist_ok=True)
    handles = []
    started = time.perf_counter()
    try:
        for argv in argvs:
            err = (logs / f"{ctx.next_id('p')}.err").open("w+")
            handles.append((ctx.popen(argv, stdout=subprocess.DEVNULL, stderr=err), err))
        failed = []
        for proc, err in handles:
            if proc.wait(timeout=PROCESS_TIMEOUT_S) != 0:
                err.seek(0)
                tail = err.read().strip().splitlines()[-1:] or [""]
                failed.append(f"exit {proc.returncode}: {tail[0][:300]}")
        wall = time.perf_counter() - started
    finally:
        for proc, err in handles:
            if proc.poll() is not None:  # still running only when interrupted: cleanup() stops it
                ctx.finished(proc)
            err.close()
            Path(err.name).unlink(missing_ok=True)
    return wall, failed

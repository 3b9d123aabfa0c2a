"""concurrency: N trivial runs started together, against N bare `docker run --rm <image> true`.

launcher:  N `launcher --root <temp root> run --no-pool <task-i>` processes (N tasks with the
           command `true` on a small generated repository), all started in a tight loop.
none:      the same with `--network none`: no per-run network to create and remove.
batch:     the same N tasks queued (not measured), then one `launcher batch --parallel N`: one
           process runs them all, so the interpreter start and imports are paid once.
served:    the same N `launcher run` processes (and `served-none` with `--network none`) through
           the launch service (LAUNCHER_SERVICE=on, started untimed beforehand): each must say
           it was served.
pool:      `launcher pool warm --size N` first (not measured: that is what a pool is for), then
           the N `launcher run` processes; each must take a slot (the pool must be empty after).
bare:      N `docker run --rm <image> true` processes started the same way.

Every figure is the wall time from the first process start to the last exit, and every run
uses launcher's default network (allowlist: a network of its own, through the egress proxy),
while the bare containers share Docker's default bridge.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import (
    IMAGE,
    PROCESS_TIMEOUT_S,
    BenchmarkError,
    BenchResult,
    Context,
    Figure,
    Target,
    wait_teardowns,
)

N_FULL = 50
N_QUICK = 8
SMALL_REPO_FILES = 20
TARGET = Target("ratio_max", 1.3)
# Issue #20: N separate `launcher run` processes within 1.8x; one batch within 1.3x.
SEPARATE_TARGET = Target("ratio_max", 1.8)


def run(ctx: Context) -> BenchResult:
    n = N_QUICK if ctx.options.quick else N_FULL
    repeats = ctx.repeats(full=3, quick=2)
    repo = ctx.repo(SMALL_REPO_FILES)
    root = ctx.case_root("concurrency")
    tasks = ctx.create_tasks(root, repo, "concurrent", n, ["true"])
    base = [*ctx.launcher, "--root", str(root)]
    launcher_argvs = [[*base, "run", "--no-pool", t] for t in tasks]
    offline_argvs = [[*base, "run", "--no-pool", "--network", "none", t] for t in tasks]
    pool_argvs = [[*base, "run", t] for t in tasks]
    bare_argvs = [["docker", "run", "--rm", *ctx.bare_labels(), IMAGE, "true"] for _ in range(n)]
    _burst(ctx, launcher_argvs[:1])  # warm-up
    wait_teardowns(root)
    _burst(ctx, bare_argvs[:1])

    def queue_then_batch() -> list[list[str]]:
        ctx.run([*base, "queue", *tasks])
        return [[*base, "batch", "--parallel", str(n)]]

    def warm_then_run() -> list[list[str]]:
        ctx.run([*base, "pool", "warm", "--repo", str(repo), "--size", str(n)])
        return pool_argvs

    ctx.start_service()  # untimed, as the pool's warming is: served bursts find it up
    setups: list[tuple[str, Callable[[], list[list[str]]]]] = [
        ("launcher", lambda: launcher_argvs),
        ("none", lambda: offline_argvs),
        ("served", lambda: launcher_argvs),
        ("served-none", lambda: offline_argvs),
        ("batch", queue_then_batch),
        ("pool", warm_then_run),
        ("bare", lambda: bare_argvs),
    ]
    walls: dict[str, list[float]] = {kind: [] for kind, _ in setups}
    failures: dict[str, list[float]] = {kind: [] for kind, _ in setups}
    errors: list[str] = []
    for i in range(repeats):
        for kind, setup in setups if i % 2 == 0 else setups[::-1]:
            wall, failed = _burst(ctx, setup(), served=kind.startswith("served"))
            wait_teardowns(root)  # untimed: the runs' removal after their result, before the next burst
            if kind == "pool":
                left = ctx.run([*base, "pool", "ls", "--json"]).stdout
                if json.loads(left):
                    raise BenchmarkError(f"pooled runs left slots untaken, so some started from scratch: {left}")
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
            target=SEPARATE_TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: wall, --network none",
            "s",
            walls["none"],
            walls["bare"],
            f"{n} x docker run --rm {IMAGE} true",
            target=SEPARATE_TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: wall, through the launch service (LAUNCHER_SERVICE=on)",
            "s",
            walls["served"],
            walls["bare"],
            f"{n} x docker run --rm {IMAGE} true",
            target=SEPARATE_TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: wall, --network none, through the launch service",
            "s",
            walls["served-none"],
            walls["bare"],
            f"{n} x docker run --rm {IMAGE} true",
            target=SEPARATE_TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: wall, one `launcher batch -j {n}`",
            "s",
            walls["batch"],
            walls["bare"],
            f"{n} x docker run --rm {IMAGE} true",
            target=TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: wall, each from a warm pool slot",
            "s",
            walls["pool"],
            walls["bare"],
            f"{n} x docker run --rm {IMAGE} true",
            target=SEPARATE_TARGET,
        ),
        Figure(
            "concurrency",
            f"{n} concurrent runs: failed runs (all six ways)",
            "count",
            [
                sum(values)
                for values in zip(
                    *(failures[k] for k in ("launcher", "none", "served", "served-none", "batch", "pool")), strict=True
                )
            ],
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


def _burst(ctx: Context, argvs: list[list[str]], *, served: bool = False) -> tuple[float, list[str]]:
    """Start every process at once; the wall time until the last exits, and what failed. Served:
    through the launch service, and each must say it was (else the figure is not what it says)."""
    env = ctx.served_env() if served else ctx.env
    unserved = 0
    logs = ctx.tmp / "burst-logs"
    logs.mkdir(exist_ok=True)
    handles = []
    started = time.perf_counter()
    try:
        for argv in argvs:
            err = (logs / f"{ctx.next_id('p')}.err").open("w+")
            handles.append((ctx.popen(argv, stdout=subprocess.DEVNULL, stderr=err, env=env), err))
        failed = []
        for proc, err in handles:
            if proc.wait(timeout=PROCESS_TIMEOUT_S) != 0:
                err.seek(0)
                tail = err.read().strip().splitlines()[-1:] or [""]
                failed.append(f"exit {proc.returncode}: {tail[0][:300]}")
        wall = time.perf_counter() - started
        for _proc, err in handles:
            err.seek(0)
            unserved += served and "served by the launch service" not in err.read()
    finally:
        for proc, err in handles:
            if proc.poll() is not None:  # still running only when interrupted: cleanup() stops it
                ctx.finished(proc)
            err.close()
            Path(err.name).unlink(missing_ok=True)
    if unserved:
        raise BenchmarkError(f"{unserved} of {len(argvs)} processes of a served burst ran in their own process")
    return wall, failed

"""cli: how long the command line takes to start, against the interpreter doing nothing.

launcher:  `launcher --help`, and `launcher --root <temp root> ps` (an initialised, empty root).
bare:      `python -c pass` with the same interpreter launcher runs on.

Wall time of each process, interleaved, after one untimed warm-up of each.
"""

from __future__ import annotations

import subprocess
import time

from benchmarks.common import BenchmarkError, BenchResult, Context, Figure, Target

HELP_TARGET = Target("max", 0.15)


def run(ctx: Context) -> BenchResult:
    repeats = ctx.repeats(full=10, quick=5)
    root = ctx.case_root("cli")
    commands = {
        "help": [*ctx.launcher, "--help"],
        "ps": [*ctx.launcher, "--root", str(root), "ps"],
        "pass": [str(ctx.python), "-c", "pass"],
    }
    for argv in commands.values():
        _time(ctx, argv)
    walls: dict[str, list[float]] = {k: [] for k in commands}
    for i in range(repeats):
        names = list(commands)
        for name in names if i % 2 == 0 else names[::-1]:
            walls[name].append(_time(ctx, commands[name]))
    result = BenchResult("cli")
    bare = f"{ctx.python.name} -c pass"
    result.figures += [
        Figure("cli", "launcher --help", "s", walls["help"], walls["pass"], bare, target=HELP_TARGET),
        Figure("cli", "launcher ps", "s", walls["ps"], walls["pass"], bare),
    ]
    result.details["cli"] = {"repeats": repeats, "walls": walls, "argv": commands}
    return result


def _time(ctx: Context, argv: list[str]) -> float:
    start = time.perf_counter()
    proc = ctx.popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    wall = time.perf_counter() - start
    ctx.finished(proc)
    if proc.returncode != 0:
        raise BenchmarkError(f"{' '.join(argv)} exited {proc.returncode}: {err.decode(errors='replace')[-400:]}")
    return wall

"""launch: `launcher run` against the bare floor on the same generated repository.

launcher:  `launcher --root <temp root> run --network allowlist|none <task>` as a subprocess; the
           task's agent command prints a `date +%s.%N` timestamp as its first instruction.
           `allowlist` is the default: the run gets its own network and the egress proxy
           (started by the warm-up run, as it is by the first run on any root).
bare:      `git worktree add <tmp> HEAD` (with checkout), then
           `docker run --rm -v <worktree>:/workspace launcher/agent-base:latest <same command>`.

Both start from the same point: the host clock just before the first subprocess is started.
"to first instruction" = the agent's timestamp minus that start; "full wall" = until the last
process exits. The bare worktree is removed afterwards, outside the measurement; launcher
removes its own inside (it is part of a run).

The step breakdown uses only what can be seen from outside: the coordinator's records of the
run (created, preparing, started, ended), the engine's container events (create, start, die)
and the agent's timestamp.
"""

from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.common import (
    AGENT_COMMAND,
    IMAGE,
    SAMPLE_LABEL,
    BenchmarkError,
    BenchResult,
    Context,
    DockerEvents,
    Figure,
    Target,
    fmt_value,
    iso_to_epoch,
    median,
    parse_t0,
    render_table,
)

SIZES_FULL = (3_000, 50_000)
SIZES_QUICK = (3_000,)
LAUNCH_TARGET = Target("ratio_max", 1.2)

# (label, launcher marks, bare marks): a step is the time between two marks of one sample.
STEPS: list[tuple[str, tuple[str, str] | None, tuple[str, str] | None]] = [
    ("launch -> container created", ("launch", "create"), ("launch", "create")),
    ("  python start, imports, plan, claim", ("launch", "claimed"), None),
    ("  worktree, private git dir, task files, chown, docker create", ("claimed", "create"), None),
    ("  git worktree add (with checkout)", None, ("launch", "git_done")),
    ("  docker CLI, docker create", None, ("git_done", "create")),
    ("container created -> started", ("create", "start"), ("create", "start")),
    ("started -> first instruction (launcher: entry.sh checkout)", ("start", "t0"), ("start", "t0")),
    ("first instruction -> container died", ("t0", "die"), ("t0", "die")),
    ("container died -> process exit", ("die", "exit"), ("die", "exit")),
    ("  harvest, settle, remove container + worktree", ("die", "settled"), None),
    ("  close store, interpreter exit", ("settled", "exit"), None),
]


@dataclass
class Sample:
    kind: str
    first: float
    full: float
    marks: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)

    def step(self, pair: tuple[str, str] | None) -> float | None:
        if pair is None or pair[0] not in self.marks or pair[1] not in self.marks:
            return None
        return self.marks[pair[1]] - self.marks[pair[0]]


def run(ctx: Context) -> BenchResult:
    result = BenchResult("launch")
    for size in SIZES_QUICK if ctx.options.quick else SIZES_FULL:
        _one_size(ctx, size, result)
    return result


def _one_size(ctx: Context, size: int, result: BenchResult) -> None:
    label = f"{size // 1000}k files"
    repeats = ctx.repeats(full=7 if size < 10_000 else 5, quick=3)
    repo = ctx.repo(size)
    root = ctx.case_root(f"launch-{size}")
    [task] = ctx.create_tasks(root, repo, f"launch {label}", 1, AGENT_COMMAND)
    samples: list[Sample] = []
    with DockerEvents(ctx) as events:
        _launcher_once(ctx, root, task, "allowlist")  # warm-up: caches, the entry script, image layers, proxy
        _bare_once(ctx, repo)
        for i in range(repeats):  # interleaved, rotating which goes first, so drift hits all alike
            trio = [
                lambda: _launcher_once(ctx, root, task, "allowlist"),
                lambda: _launcher_once(ctx, root, task, "none"),
                lambda: _bare_once(ctx, repo),
            ]
            for measure in trio[i % 3 :] + trio[: i % 3]:
                samples.append(measure())
    for s in samples:
        s.marks.update(events.times(**s.labels))
    ours = [s for s in samples if s.kind == "launcher"]
    offline = [s for s in samples if s.kind == "launcher-none"]
    bare = [s for s in samples if s.kind == "bare"]
    baseline = "git worktree add + docker run --rm"
    for runs, network in ((ours, "allowlist network"), (offline, "--network none")):
        for measure, attribute in (("to first instruction", "first"), ("full wall", "full")):
            result.figures.append(
                Figure(
                    "launch",
                    f"launch {label}, {network}: {measure}",
                    "s",
                    [getattr(s, attribute) for s in runs],
                    [getattr(s, attribute) for s in bare],
                    baseline,
                    target=LAUNCH_TARGET,
                )
            )
    rows, steps_json = [], []
    for name, ours_pair, bare_pair in STEPS:
        lm = median([v for s in ours if (v := s.step(ours_pair)) is not None])
        bm = median([v for s in bare if (v := s.step(bare_pair)) is not None])
        rows.append([name, fmt_value(lm, "s") if ours_pair else "", fmt_value(bm, "s") if bare_pair else ""])
        steps_json.append({"step": name.strip(), "launcher": lm, "bare": bm})
    result.details[f"launch_{size}"] = {
        "files": size,
        "repeats": repeats,
        "steps_median_s": steps_json,
        "samples": [{"kind": s.kind, "first": s.first, "full": s.full, "marks": s.marks} for s in samples],
    }
    result.reports.append(
        f"where the time goes, launch {label} (medians; marks from the coordinator, docker events, the agent):\n"
        + render_table(rows, ["step", "launcher", "bare"], right={1, 2})
    )


def _launcher_once(ctx: Context, root: Path, task: str, network: str) -> Sample:
    argv = [*ctx.launcher, "--root", str(root), "run", "--network", network, task]
    launch = time.time()
    started = time.perf_counter()
    done = ctx.run(argv)
    full = time.perf_counter() - started
    t0 = parse_t0(done.stdout)
    match = re.search(r"launcher: run (\S+) on branch", done.stderr)
    if not match:
        raise BenchmarkError(f"cannot find the run ID in launcher's output: {done.stderr[-400:]!r}")
    run_id = match.group(1)
    marks = {"launch": launch, "t0": t0, "exit": launch + full, **_run_marks(root, run_id)}
    kind = "launcher" if network == "allowlist" else f"launcher-{network}"
    return Sample(kind, t0 - launch, full, marks, {"launcher.run-id": run_id, "launcher.root": str(root)})


def _run_marks(root: Path, run_id: str) -> dict[str, float]:
    """The run's steps as launcher recorded them in its coordinator (read-only)."""
    db = sqlite3.connect(f"file:{root / '.launcher' / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute("SELECT created_at, started_at, ended_at FROM runs WHERE id = ?", (run_id,)).fetchone()
        events = db.execute("SELECT to_state, at FROM run_events WHERE run_id = ?", (run_id,)).fetchall()
    finally:
        db.close()
    marks: dict[str, float] = {}
    for key, value in zip(("claimed", "running", "settled"), row or (), strict=False):
        if (epoch := iso_to_epoch(value)) is not None:
            marks[key] = epoch
    for state, at in events:
        if state == "preparing" and (epoch := iso_to_epoch(at)) is not None:
            marks["preparing"] = epoch
    return marks


def _bare_once(ctx: Context, repo: Path) -> Sample:
    sample = ctx.next_id("bare")
    worktree = ctx.tmp / "bare-worktrees" / sample
    worktree.parent.mkdir(exist_ok=True)
    launch = time.time()
    started = time.perf_counter()
    ctx.run(["git", "-C", str(repo), "worktree", "add", "-q", str(worktree), "HEAD"])
    git_done = time.time()
    done = ctx.run(
        ["docker", "run", "--rm", *ctx.bare_labels(sample), "-v", f"{worktree}:/workspace", IMAGE, *AGENT_COMMAND]
    )
    full = time.perf_counter() - started
    t0 = parse_t0(done.stdout)
    ctx.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(worktree)])
    marks = {"launch": launch, "git_done": git_done, "t0": t0, "exit": launch + full}
    return Sample("bare", t0 - launch, full, marks, {SAMPLE_LABEL: sample})

"""launch: `launcher run` against the bare floor on the same repository (generated, or a clone of a real one).

Repositories: a generated one per `--sizes` entry (benchmarks/repo_shapes.py: shaped like a
real project), and a `git clone --no-hardlinks` of each `--repo PATH` in the session's folder.
Launcher and the bare floor work on that same clone, so both read the same object store and
check out the same commit; the given repository is only read by the clone.

launcher:  `launcher --root <temp root> run --network allowlist|none <task>` as a subprocess; the
           task's agent command prints a `date +%s.%N` timestamp as its first instruction.
           `allowlist` is the default: the run gets its own network and the egress proxy
           (started by the warm-up run, as it is by the first run on any root).
warm pool: `launcher pool warm --repo <repo> --size 1 --network allowlist|none` (untimed: the slot
           is made ahead of time), then the same `launcher run` as above, which takes the
           slot (its record's `details.pool_slot` must name it, or the benchmark fails).
           Scratch runs must not take one (none is ready then; checked too).
bare:      `git worktree add <tmp> HEAD` (with checkout), then
           `docker run --rm -v <worktree>:/workspace launcher/agent-base:latest <same command>`.

Both start from the same point: the host clock just before the first subprocess is started.
"to first instruction" = the agent's timestamp minus that start; "full wall" = until the last
process exits. The bare worktree is removed afterwards, outside the measurement; launcher
removes its own inside (it is part of a run).

The step breakdown uses only what can be seen from outside: the coordinator's records of the
run (created, preparing, started, ended), the engine's container events (create, start, die)
and the agent's timestamp. A pooled run's container is the slot's (labelled by slot, created
and started while warming), so only its `die` falls inside the sample.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import pool, repo_shapes
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
    wait_teardowns,
)

SIZES_FULL = (3_000, 50_000)
SIZES_QUICK = (3_000,)
LAUNCH_TARGET = Target("ratio_max", 1.2)
# A run that takes a warm slot: to first instruction in at most half the bare floor's time.
POOL_TARGET = Target("ratio_max", 0.5)
BASELINE = "git worktree add + docker run --rm"

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
    ("  harvest, settle (removal: after exit, see defer_teardown)", ("die", "settled"), None),
    ("  close store, interpreter exit", ("settled", "exit"), None),
]

# Steps of a run from scratch and of one that takes a warm slot, on the marks both have (a
# slot's container was created and started while warming, before the sample began).
POOL_STEPS: list[tuple[str, tuple[str, str]]] = [
    ("launch -> run claimed (python start, imports, plan, claim)", ("launch", "claimed")),
    ("run claimed -> running (scratch: worktree, create, start; pool: take the slot)", ("claimed", "running")),
    ("running -> first instruction (scratch: entry.sh checkout; pool: entry takes the spec)", ("running", "t0")),
    ("first instruction -> container died", ("t0", "die")),
    ("container died -> process exit", ("die", "exit")),
]


@dataclass
class Sample:
    kind: str
    first: float
    full: float
    marks: dict[str, float]
    labels: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def step(self, pair: tuple[str, str] | None) -> float | None:
        if pair is None or pair[0] not in self.marks or pair[1] not in self.marks:
            return None
        return self.marks[pair[1]] - self.marks[pair[0]]


def run(ctx: Context) -> BenchResult:
    result = BenchResult("launch")
    sizes = ctx.options.sizes
    if not sizes and not ctx.options.repos:
        sizes = SIZES_QUICK if ctx.options.quick else SIZES_FULL
    for size in sizes:
        repo = ctx.repo(size)
        repeats = ctx.repeats(full=7 if size < 10_000 else 5, quick=3)
        _one_repo(ctx, repo, "generated", f"launch_{size}", repeats, result)
    for source in ctx.options.repos:
        name = _source_name(source)
        repo = ctx.clone(source)
        files = repo_shapes.shape_of(repo).files
        repeats = ctx.repeats(full=7 if files < 10_000 else 5, quick=3)
        _one_repo(ctx, repo, name, f"launch_{_slug(name)}", repeats, result, source=source)
    return result


def _source_name(source: Path) -> str:
    top = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return Path(top or source).resolve().name


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_") or "repo"


def _one_repo(
    ctx: Context, repo: Path, name: str, key: str, repeats: int, result: BenchResult, *, source: Path | None = None
) -> None:
    shape = repo_shapes.shape_of(repo)
    sparse_dir = repo_shapes.sparse_dir(shape)
    label = f"{name} ({shape.files:,} files)"
    root = ctx.case_root(ctx.next_id(f"launch-{_slug(name)}"))
    [task] = ctx.create_tasks(root, repo, f"launch {label}", 1, AGENT_COMMAND)
    # The same launch on a root that keeps one spare network ([network] spare_networks = 1).
    spare_root = ctx.case_root(ctx.next_id(f"launch-{_slug(name)}-spare"))
    toml = spare_root / "launcher.toml"
    toml.write_text(toml.read_text().replace("[network]\n", "[network]\nspare_networks = 1\n", 1))
    [spare_task] = ctx.create_tasks(spare_root, repo, f"launch {label} (spare network)", 1, AGENT_COMMAND)
    samples: list[Sample] = []
    cleanup: list[str] = []
    try:
        with DockerEvents(ctx) as events:
            # Warm-up: caches, the entry script, image layers, the proxy, the pool's folders.
            _launcher_once(ctx, root, task, "allowlist")
            spare = _launcher_once(ctx, spare_root, spare_task, "allowlist", kind="spare-network")
            spare_network = str(spare.extra["network"])
            _pooled_once(ctx, root, repo, task, "allowlist")
            _pooled_once(ctx, root, repo, task, "none")
            ctx.start_service()
            _launcher_once(ctx, root, task, "allowlist", served=True)
            _bare_once(ctx, repo)
            measures: list[Callable[[], Sample]] = [
                lambda: _launcher_once(ctx, root, task, "allowlist"),
                lambda: _launcher_once(ctx, root, task, "none"),
                lambda: _spare_once(ctx, spare_root, spare_task, spare_network),
                lambda: _pooled_once(ctx, root, repo, task, "allowlist"),
                lambda: _pooled_once(ctx, root, repo, task, "none"),
                lambda: _launcher_once(ctx, root, task, "allowlist", served=True),
                lambda: _launcher_once(ctx, root, task, "none", served=True),
                lambda: _pooled_once(ctx, root, repo, task, "allowlist", served=True),
                lambda: _bare_once(ctx, repo),
            ]
            if sparse_dir:
                measures.insert(-1, lambda: _launcher_once(ctx, root, task, "allowlist", sparse=sparse_dir))
            for i in range(repeats):  # interleaved, rotating which goes first, so drift hits all alike
                shift = i % len(measures)
                for measure in measures[shift:] + measures[:shift]:
                    samples.append(measure())
    finally:
        # Every pooled sample took its slot, so there is nothing to drain unless a sample failed.
        cleanup += pool.drain(ctx, root)
        for problem in cleanup:
            print(f"[launch] cleanup of {root}: {problem}", file=sys.stderr)
    for s in samples:
        s.marks.update(events.times(**s.labels))
    by_kind = {kind: [s for s in samples if s.kind == kind] for kind in {s.kind for s in samples}}
    ours, pooled, bare = by_kind["launcher"], by_kind["pool"], by_kind["bare"]
    kinds: list[tuple[str, str, Target | None, Target | None]] = [
        ("launcher", "allowlist network", LAUNCH_TARGET, LAUNCH_TARGET),
        ("launcher-none", "--network none", LAUNCH_TARGET, LAUNCH_TARGET),
        ("spare-network", "allowlist, a spare network (spare_networks = 1)", LAUNCH_TARGET, LAUNCH_TARGET),
        ("pool", "warm pool (allowlist)", POOL_TARGET, None),
        ("pool-none", "warm pool (--network none)", POOL_TARGET, None),
        ("served", "allowlist, through the launch service (LAUNCHER_SERVICE=on)", LAUNCH_TARGET, LAUNCH_TARGET),
        ("served-none", "--network none, through the launch service", LAUNCH_TARGET, LAUNCH_TARGET),
        ("served-pool", "warm pool (allowlist), through the launch service", POOL_TARGET, None),
    ]
    if sparse_dir:
        kinds.append(("sparse", f"--sparse {sparse_dir} (allowlist)", None, None))
    for kind, network, first_target, full_target in kinds:
        runs = by_kind[kind]
        for what, attribute, target in (
            ("to first instruction", "first", first_target),
            ("full wall", "full", full_target),
        ):
            result.figures.append(
                Figure(
                    "launch",
                    f"launch {label}, {network}: {what}",
                    "s",
                    [getattr(s, attribute) for s in runs],
                    [getattr(s, attribute) for s in bare],
                    BASELINE,
                    target=target,
                    note=_pool_note(runs, what)
                    if "pool" in kind
                    else _sparse_note(shape, sparse_dir)
                    if kind == "sparse" and sparse_dir
                    else "",
                )
            )
    rows, steps_json = [], []
    for name, ours_pair, bare_pair in STEPS:
        lm = median([v for s in ours if (v := s.step(ours_pair)) is not None])
        bm = median([v for s in bare if (v := s.step(bare_pair)) is not None])
        rows.append([name, fmt_value(lm, "s") if ours_pair else "", fmt_value(bm, "s") if bare_pair else ""])
        steps_json.append({"step": name.strip(), "launcher": lm, "bare": bm})
    pool_rows, pool_json = [], []
    for name, pair in POOL_STEPS:
        lm = median([v for s in ours if (v := s.step(pair)) is not None])
        pm = median([v for s in pooled if (v := s.step(pair)) is not None])
        pool_rows.append([name, fmt_value(lm, "s"), fmt_value(pm, "s")])
        pool_json.append({"step": name, "launcher": lm, "pool": pm})
    warm_s = [s.extra["warm_s"] for kind in ("pool", "pool-none") for s in by_kind[kind]]
    result.details[key] = {
        "repository": name,
        "source": None if source is None else str(source.resolve()),
        "commit": subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "files": shape.files,
        "shape": {
            "total_bytes": shape.total_bytes,
            "median_bytes": shape.median_bytes,
            "p90_bytes": shape.p90_bytes,
            "max_bytes": shape.max_bytes,
            "max_depth": shape.max_depth,
            "folders": shape.folders,
        },
        "sparse_dir": sparse_dir,
        "repeats": repeats,
        "steps_median_s": steps_json,
        "pool_steps_median_s": pool_json,
        "pool_cleanup_problems": cleanup,
        "pool_warm_s": {kind: [s.extra["warm_s"] for s in by_kind[kind]] for kind in ("pool", "pool-none")},
        "samples": [{"kind": s.kind, "first": s.first, "full": s.full, "marks": s.marks, **s.extra} for s in samples],
    }
    result.reports.append(f"repository, launch {label}: {shape.describe()}")
    result.reports.append(
        f"where the time goes, launch {label} (medians; marks from the coordinator, docker events, the agent):\n"
        + render_table(rows, ["step", "launcher", "bare"], right={1, 2})
    )
    result.reports.append(
        f"warm pool, launch {label}: every pooled sample took the slot warmed for it (details.pool_slot); "
        f"warming one slot (untimed, before the sample) took {fmt_value(median(warm_s), 's')} (median)\n"
        + render_table(pool_rows, ["step (allowlist)", "from scratch", "warm pool"], right={1, 2})
    )


def _sparse_note(shape: repo_shapes.Shape, folder: str) -> str:
    inside = [p for p in shape.paths if p.startswith(folder + "/") or "/" not in p]
    return f"checks out {len(inside):,} of {shape.files:,} files; no target: reported for comparison"


def _pool_note(runs: list[Sample], measure: str) -> str:
    warm = median([s.extra["warm_s"] for s in runs])
    note = f"each run took a slot warmed for it beforehand (untimed; median warm {fmt_value(warm, 's')})"
    if measure == "full wall":
        note += "; no target: reported for comparison"
    return note


def _launcher_once(
    ctx: Context,
    root: Path,
    task: str,
    network: str,
    *,
    pooled: bool = False,
    sparse: str | None = None,
    kind: str | None = None,
    served: bool = False,
) -> Sample:
    argv = [*ctx.launcher, "--root", str(root), "run", "--network", network, task]
    if sparse:
        argv[-1:-1] = ["--sparse", sparse]
    launch = time.time()
    started = time.perf_counter()
    done = ctx.run(argv, env=ctx.served_env()) if served else ctx.run(argv)
    full = time.perf_counter() - started
    if served and "served by the launch service" not in done.stderr:
        raise BenchmarkError(f"a served sample ran in its own process: {done.stderr[-400:]!r}")
    # Untimed: the run's deferred teardown ([run] defer_teardown) ends before the next sample,
    # so that its work does not land in another sample's time.
    teardown_s = wait_teardowns(root)
    t0 = parse_t0(done.stdout)
    match = re.search(r"launcher: run (\S+) on branch", done.stderr)
    if not match:
        raise BenchmarkError(f"cannot find the run ID in launcher's output: {done.stderr[-400:]!r}")
    run_id = match.group(1)
    run_marks, details = _run_record(root, run_id)
    slot = details.get("pool_slot")
    if not pooled and slot:
        raise BenchmarkError(f"run {run_id} (from scratch) took pool slot {slot}: no slot should have been ready")
    marks = {"launch": launch, "t0": t0, "exit": launch + full, **run_marks}
    if kind is None:
        kind = "pool" if pooled else "sparse" if sparse else "launcher"
        if served:
            kind = "served-pool" if pooled else "served"
        kind += "" if network == "allowlist" else f"-{network}"
    labels = {"launcher.run-id": run_id, "launcher.root": str(root)}
    if slot:  # the slot's container carries the slot's labels, not the run's
        labels = {"launcher.pool-slot": str(slot), "launcher.root": str(root)}
    extra = {
        "run_id": run_id,
        "pool_slot": slot,
        "network": (details.get("egress") or {}).get("network"),
        "teardown_after_exit_s": teardown_s,
    }
    return Sample(kind, t0 - launch, full, marks, labels, extra)


def _spare_once(ctx: Context, root: Path, task: str, network: str) -> Sample:
    """A launch on the root that keeps a spare: it must take the one the run before it left."""
    sample = _launcher_once(ctx, root, task, "allowlist", kind="spare-network")
    if sample.extra["network"] != network:
        raise BenchmarkError(
            f"run {sample.extra['run_id']} made network {sample.extra['network']} instead of taking the spare {network}"
        )
    return sample


def _pooled_once(ctx: Context, root: Path, repo: Path, task: str, network: str, *, served: bool = False) -> Sample:
    """One slot warmed (untimed), then the same run as `_launcher_once`; it must take that slot."""
    slot, warm_s = pool.warm_one(ctx, root, repo, network)
    sample = _launcher_once(ctx, root, task, network, pooled=True, served=served)
    if sample.extra["pool_slot"] != slot:
        taken = sample.extra["pool_slot"]
        raise BenchmarkError(
            f"run {sample.extra['run_id']} did not take the slot warmed for it ({slot}; details.pool_slot = "
            f"{taken!r}): a pooled figure from it would be a run from scratch"
        )
    sample.extra["warm_s"] = warm_s
    return sample


def _run_record(root: Path, run_id: str) -> tuple[dict[str, float], dict[str, Any]]:
    """The run's steps as launcher recorded them in its coordinator (read-only), and its details."""
    db = sqlite3.connect(f"file:{root / '.launcher' / 'state.db'}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute(
            "SELECT created_at, started_at, ended_at, details FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
        events = db.execute("SELECT to_state, at FROM run_events WHERE run_id = ?", (run_id,)).fetchall()
    finally:
        db.close()
    if row is None:
        raise BenchmarkError(f"run {run_id} is not in {root / '.launcher' / 'state.db'}")
    marks: dict[str, float] = {}
    for key, value in zip(("claimed", "running", "settled"), row[:3], strict=True):
        if (epoch := iso_to_epoch(value)) is not None:
            marks[key] = epoch
    for state, at in events:
        if state == "preparing" and (epoch := iso_to_epoch(at)) is not None:
            marks["preparing"] = epoch
    details = json.loads(row[3]) if row[3] else {}
    return marks, details if isinstance(details, dict) else {}


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

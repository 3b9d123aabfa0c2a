"""cluster: tasks per minute on 1, 2 and 3 boxes for the same total CPU, and lease-expiry recovery.

Opt-in (`--only cluster`): it builds the cluster-box image when launcher changed and brings up
three clusters in turn (scripts/cluster.sh, driven through tests/cluster/clusterkit.py), which
takes minutes. The image is built once, first, and all three clusters run on it (tagged
`launcher/cluster-box-bench:<session>` meanwhile, so that a build from a changed checkout cannot
remove it), so every figure is of the same launcher.

throughput: for N = 1, 2, 3 a cluster of N boxes, each limited to TOTAL_CPUS / N CPUs
            (CLUSTER_BOX_CPUS, i.e. `docker run --cpus`: a box's engine and its runs share
            them), a PostgreSQL coordinator and the stand-in forge. The same M tasks are queued
            (untimed), then one `launcher batch --parallel 2` per box. Wall: from just before
            the workers start to the last task's claim released (its run settled and published),
            both on the database's clock (`clock_timestamp()`, `tasks.updated_at`). The 1-box
            figure is the baseline of the 2- and 3-box ones: same tasks, same total CPU.
recovery:   on the 3-box cluster, a box whose run is running is killed (`docker kill`: its
            engine and the run die with it); the other boxes' batches wait for the task. The
            figure is from the kill to the task's next attempt entering `running` on another
            box, both on the database's clock (``run_events.at``), as tests/cluster measures it.

Every task must have run exactly once (one `exited` run with exit 0, published, no two attempts
running at once; in the recovery samples the killed attempt `lost`): the benchmark fails otherwise.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

from benchmarks.common import IMAGE, BenchmarkError, BenchResult, Context, Figure, Target

REPO_ROOT = Path(__file__).resolve().parent.parent
BOXES = (1, 2, 3)
TOTAL_CPUS = 1.5  # of this machine's 2: the rest is the coordinator's, the forge's and the host engine's
PARALLEL = 2  # per box, whatever its CPUs
TASKS_FULL, TASKS_QUICK = 12, 6
KILLS_FULL, KILLS_QUICK = 3, 2
LEASE_S = 10
PINNED_REPO = "launcher/cluster-box-bench"
BATCH_ARGS = ["--parallel", str(PARALLEL), "--lease", str(LEASE_S), "--poll", "0.5", "--network", "none"]
SETTLE_TIMEOUT_S = 900
# A stand-in for an agent, not one: some CPU work (hashing generated data into 80 files, about
# a CPU-second here), then a commit of what it made, which the batch pushes to the forge.
STANDIN = (
    "mkdir -p gen-{n} && i=0; while [ $i -lt 80 ]; do "
    "seq $i 60000 | sha256sum > gen-{n}/hash-$i.txt; seq $i 2000 | sed 's/^/row /' > gen-{n}/rows-$i.txt; "
    'i=$((i+1)); done; git add gen-{n} && git commit -q -m "task {n}: generated files"'
)
# The first attempt runs until its box is killed; the next one is the stand-in.
SLOW_FIRST = 'case "$CASE_RUN_ID" in *.1) sleep 300 ;; esac; ' + STANDIN


def _clusterkit() -> tuple[ModuleType, ModuleType, type[BaseException]]:
    """tests/cluster/clusterkit.py and tests/helpers.py (they import each other as top-level modules)."""
    for folder in (REPO_ROOT / "tests", REPO_ROOT / "tests" / "cluster"):
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    try:
        import clusterkit
        import helpers
        import pytest
    except ImportError as exc:
        raise BenchmarkError(f"tests/cluster/clusterkit.py cannot be imported (the dev extras: pytest): {exc}") from exc
    failed: type[BaseException] = pytest.fail.Exception
    return clusterkit, helpers, failed


def run(ctx: Context) -> BenchResult:
    kit, helpers, failed = _clusterkit()
    try:
        return _measure(ctx, kit, helpers)
    except (kit.ClusterError, failed, subprocess.TimeoutExpired) as exc:
        # clusterkit fails as a test would (an assertion, pytest.fail): here that is a failed benchmark.
        raise BenchmarkError(str(exc)) from None


def _measure(ctx: Context, kit: ModuleType, helpers: ModuleType) -> BenchResult:
    pinned = f"{PINNED_REPO}:{ctx.session}"
    print("[cluster] the box image (built when launcher changed)…", file=sys.stderr, flush=True)
    t = time.perf_counter()
    built = kit.Cluster.named(prefix="launcher-bench-cluster").script("image", timeout=kit.UP_TIMEOUT_S)
    image = built.stdout.strip()
    image_s = time.perf_counter() - t
    _docker(["tag", image, pinned])
    try:
        _check_image(ctx, pinned)
        result = _clusters(ctx, kit, helpers, pinned)
    finally:
        _docker(["image", "rm", pinned], check=False)  # the tag only: the image keeps its own
    result.details["cluster"]["box_image"] = {"tag": image, "build_or_check_s": round(image_s, 1)}
    result.reports[0] += f"\n  box image {image}: {image_s:.0f} s to build (or find) it, before any cluster"
    return result


def _docker(argv: list[str], *, check: bool = True) -> str:
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        raise BenchmarkError(f"docker {' '.join(argv)}: {done.stderr.strip()[-800:]}")
    return done.stdout


def _check_image(ctx: Context, image: str) -> None:
    """The box image's launcher compiles: it is built from the checkout as it is, also mid-edit."""
    script = (
        "import compileall, os, sys, launcher; "
        "sys.exit(not compileall.compile_dir(os.path.dirname(launcher.__file__), quiet=1, force=True))"
    )
    argv = ["run", "--rm", "--network", "none", *ctx.bare_labels(), image, "/opt/venv/bin/python", "-c", script]
    done = subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0:
        raise BenchmarkError(
            f"the box image {image} holds a launcher that does not compile (the checkout mid-edit?): "
            f"{(done.stdout + done.stderr).strip()[-1500:]}"
        )


def _clusters(ctx: Context, kit: ModuleType, helpers: ModuleType, image: str) -> BenchResult:
    quick = ctx.options.quick
    tasks = TASKS_QUICK if quick else TASKS_FULL
    rounds = ctx.options.repeats or 1
    kills = ctx.options.repeats or (KILLS_QUICK if quick else KILLS_FULL)
    rates: dict[int, list[float]] = {}
    details: dict[str, Any] = {
        "total_cpus": TOTAL_CPUS,
        "tasks": tasks,
        "parallel_per_box": PARALLEL,
        "lease_s": LEASE_S,
        "standin": STANDIN,
    }
    recoveries: list[float] = []
    not_once: list[float] = []
    for n in BOXES:
        cpus = round(TOTAL_CPUS / n, 3)
        made = kit.Cluster.named(
            prefix="launcher-bench-cluster",
            images=IMAGE,
            logs_dir=ctx.tmp / "cluster" / f"{n}-boxes",
            box_cpus=cpus,
            box_image=image,
        )
        info: dict[str, Any] = {"cpus_per_box": cpus, "cluster": made.name, "rounds": []}
        details[f"cluster_{n}_boxes"] = info
        try:
            print(f"[cluster] up {n} box(es), {cpus:g} CPUs each…", file=sys.stderr, flush=True)
            t = time.perf_counter()
            made.up(n)
            info["up_s"] = round(time.perf_counter() - t, 1)
            info["nano_cpus"] = _check_limits(made, cpus)
            for r in range(rounds):
                sample = _throughput(made, kit, n, tasks, title=f"Bench {n}x{r + 1}")
                info["rounds"].append(sample)
                rates.setdefault(n, []).append(sample["tasks_per_min"])
                not_once.append(0.0)  # _throughput fails the benchmark otherwise
                print(
                    f"[cluster] {n} box(es): {tasks} tasks in {sample['wall_s']:.1f} s "
                    f"({sample['tasks_per_min']:.1f} /min), runs per box {sample['runs_per_box']}",
                    file=sys.stderr,
                    flush=True,
                )
            if n == BOXES[-1]:
                info["recovery"] = []
                for k in range(kills):
                    victim = k % n + 1
                    found = _recovery(made, helpers, kit, victim, title=f"Kill {k + 1}")
                    info["recovery"].append(found)
                    recoveries.append(found["recovery_s"])
                    not_once.append(0.0)
                    print(
                        f"[cluster] box {victim} killed: its task running on {found['rescued_on']} "
                        f"after {found['recovery_s']:.1f} s (lease {LEASE_S} s)",
                        file=sys.stderr,
                        flush=True,
                    )
                    made.restore()
        finally:
            info["loadavg_at_end"] = list(os.getloadavg())
            t = time.perf_counter()
            try:
                made.down()
            except kit.ClusterError as exc:
                info["down_problem"] = str(exc)[-800:]
                print(f"[cluster] down of {made.name} failed: {exc}", file=sys.stderr)
            info["down_s"] = round(time.perf_counter() - t, 1)

    result = BenchResult("cluster", details={"cluster": details})
    base = rates[1]
    for n in BOXES:
        cpus = details[f"cluster_{n}_boxes"]["cpus_per_box"]
        boxes = "1 box" if n == 1 else f"{n} boxes"
        result.figures.append(
            Figure(
                "cluster",
                f"cluster, {boxes} ({cpus:g} CPUs each): tasks/min",
                "/min",
                rates[n],
                [] if n == 1 else base,
                baseline_label="" if n == 1 else f"1 box, {TOTAL_CPUS:g} CPUs",
                higher_is_better=True,
                note=f"{tasks} tasks, --parallel {PARALLEL} per box, {TOTAL_CPUS:g} CPUs in all",
            )
        )
    result.figures.append(
        Figure(
            "cluster",
            "cluster, lease-expiry recovery: kill to next attempt running",
            "s",
            recoveries,
            [float(LEASE_S)],
            baseline_label="the lease (--lease)",
            note=f"3 boxes, {TOTAL_CPUS / 3:g} CPUs each; lease {LEASE_S} s, renewed every {LEASE_S / 3:.1f} s",
        )
    )
    result.figures.append(
        Figure(
            "cluster",
            "cluster: tasks not run exactly once",
            "count",
            not_once,
            target=Target("equals", 0),
        )
    )
    result.reports.append(_report(details, rates, recoveries))
    return result


def _check_limits(made: Any, cpus: float) -> list[int]:
    """Each box's CPU limit as the engine has it (NanoCpus), which must be what was asked for."""
    found = []
    for name in made.box_names:
        out = subprocess.run(
            ["docker", "inspect", "-f", "{{.HostConfig.NanoCpus}}", name],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        found.append(int(out))
    if any(v != round(cpus * 1e9) for v in found):
        raise BenchmarkError(f"the boxes' CPU limits are {found} nano-CPUs, not {cpus:g} CPUs each")
    return found


def _db_epoch(made: Any, query: str = "SELECT extract(epoch FROM clock_timestamp())") -> float:
    (row,) = made.sql(query)
    return float(row[0])


def _throughput(made: Any, kit: ModuleType, n: int, count: int, *, title: str) -> dict[str, Any]:
    ids = made.queue_tasks(count, title=title, command=STANDIN)
    load = os.getloadavg()[0]
    started = _db_epoch(made)
    batches = [made.batch(i, *BATCH_ARGS) for i in range(1, n + 1)]
    _batches_done(batches, made, ids)
    # The last claim released: its run settled and published (release comes after both).
    quoted = ", ".join(f"'{t}'" for t in ids)
    ended = _db_epoch(made, f"SELECT extract(epoch FROM max(updated_at)) FROM tasks WHERE id IN ({quoted})")
    runs = made.runs(ids)
    _exactly_once(made, kit, ids, runs)
    hosts = Counter(str(made.box_number(_host(kit, r))) for r in runs)
    wall = ended - started
    return {
        "tasks": ids,
        "wall_s": round(wall, 3),
        "tasks_per_min": round(count / wall * 60, 3),
        "runs_per_box": dict(sorted(hosts.items())),
        "loadavg_1min_at_start": load,
        "loadavg_1min_at_end": os.getloadavg()[0],
    }


def _batches_done(batches: list[Any], made: Any, ids: list[str]) -> None:
    """Until every batch has exited (a batch ends once the queue is empty and no one else holds
    a queued task), each with 0; then every task must be settled."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    for batch in batches:
        try:
            code = batch.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise BenchmarkError(f"the batches did not finish in {SETTLE_TIMEOUT_S} s\n{made.report(ids)}") from None
        if code != 0:
            raise BenchmarkError(f"the batch on box {batch.box} exited {code}:\n{batch.output()[-2000:]}")
    made.wait_all_settled(ids, timeout=60, interval=1.0)


def _host(kit: ModuleType, run: dict[str, Any]) -> str:
    host = kit.owner_host(run)
    if not isinstance(host, str):
        raise BenchmarkError(f"run {run['id']} names no host: {run.get('owner')}")
    return host


def _exactly_once(
    made: Any, kit: ModuleType, ids: list[str], runs: list[dict[str, Any]], lost: frozenset[str] = frozenset()
) -> None:
    """One exited run (exit 0, published, its branch on the forge) per task; the others in ``lost``
    (run IDs) and settled lost; never two attempts of a task running at once."""
    exited = [r for r in runs if r["state"] == "exited"]
    problems = []
    per_task = Counter(r["task_id"] for r in exited)
    if per_task != Counter(ids):
        problems.append(f"exited runs per task: {dict(per_task)}")
    if {r["exit_code"] for r in exited} - {0}:
        problems.append("a run exited non-zero")
    others = [r for r in runs if r["state"] != "exited"]
    if {r["id"] for r in others} != set(lost) or any(r["state"] != "lost" for r in others):
        problems.append(f"runs other than one exited run per task: {[(r['id'], r['state']) for r in others]}")
    branches = made.forge_branches()
    for r in exited:
        published = r["details"].get("publish") or {}
        if published.get("pushed") is not True or branches.get(r["branch"]) != published.get("sha"):
            problems.append(f"{r['id']} is not on the forge as published: {published}")
    problems += kit.overlaps(kit.running_intervals(made.events(ids)))
    if problems:
        raise BenchmarkError("not every task ran exactly once: " + "; ".join(problems) + "\n" + made.report(ids))


def _connections(made: Any, box: int) -> int:
    """launcher's coordinator connections from box ``box`` (a batch opens one per worker as it starts)."""
    network = made.env["COORD_NETWORK"]
    address = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            '{{with index .NetworkSettings.Networks "' + network + '"}}{{.IPAddress}}{{end}}',
            made.box_name(box),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()
    (row,) = made.sql(
        f"SELECT count(*) FROM pg_stat_activity WHERE application_name = 'launcher' AND host(client_addr) = '{address}'"
    )
    return int(row[0])


def _recovery(made: Any, helpers: ModuleType, kit: ModuleType, victim: int, *, title: str) -> dict[str, Any]:
    """Box ``victim`` runs the task's first attempt, the other boxes' batches wait for it; the
    victim is killed; how long until the task's next attempt is running elsewhere."""
    others = [i for i in range(1, len(made.box_names) + 1) if i != victim]
    (task,) = made.queue_tasks(1, box=others[0], title=title, command=SLOW_FIRST)
    made.batch(victim, *BATCH_ARGS)
    victim_host = made.box_name(victim)

    def first_running() -> dict[str, Any] | None:
        runs = made.runs([task])
        return next((r for r in runs if r["state"] == "running" and kit.owner_host(r) == victim_host), None)

    first = helpers.wait_for(first_running, timeout=300, what=f"the first attempt running on box {victim}", interval=1)
    # The rescuers are up (every worker connected, so claiming) before the kill: what is measured
    # is the lease running out, not a batch starting.
    rescuers = [made.batch(i, *BATCH_ARGS) for i in others]
    for i in others:
        helpers.wait_for(
            lambda i=i: _connections(made, i) >= PARALLEL, timeout=120, what=f"the batch on box {i}", interval=0.5
        )
    killed_at: datetime = made.db_now()
    t = time.perf_counter()
    made.kill(victim)
    kill_s = time.perf_counter() - t
    _batches_done(rescuers, made, [task])
    runs = made.runs([task])
    _exactly_once(made, kit, [task], runs, lost=frozenset({first["id"]}))
    (again,) = [r for r in runs if r["state"] == "exited"]
    rescued_on = _host(kit, again)
    if rescued_on == victim_host:
        raise BenchmarkError(f"{task} ran again on the box that was killed: {again['id']}")
    (started,) = [e for e in made.events([task]) if e["run_id"] == again["id"] and e["to_state"] == "running"]
    recovery = (datetime.fromisoformat(started["at"]) - killed_at).total_seconds()
    return {
        "task": task,
        "victim": victim,
        "killed_run": first["id"],
        "rerun": again["id"],
        "rescued_on": rescued_on,
        "recovery_s": round(recovery, 3),
        "docker_kill_s": round(kill_s, 3),
    }


def _report(details: dict[str, Any], rates: dict[int, list[float]], recoveries: list[float]) -> str:
    lines = ["cluster (same total CPU on 1, 2, 3 boxes):"]
    base = statistics.median(rates[1])
    for n in BOXES:
        info = details[f"cluster_{n}_boxes"]
        rate = statistics.median(rates[n])
        walls = ", ".join(f"{s['wall_s']:.1f} s" for s in info["rounds"])
        spread = ", ".join(str(s["runs_per_box"]) for s in info["rounds"])
        loads = ", ".join(f"{s['loadavg_1min_at_start']:.1f}" for s in info["rounds"])
        boxes = "1 box" if n == 1 else f"{n} boxes"
        lines.append(
            f"  {boxes} x {info['cpus_per_box']:g} CPUs: {rate:.1f} tasks/min ({rate / base:.2f}x the 1-box "
            f"rate); wall {walls}; runs per box {spread}; up {info.get('up_s', '-')} s; load at start {loads}"
        )
    if recoveries:
        samples = ", ".join(f"{s:.1f}" for s in recoveries)
        lines.append(
            f"  recovery after a box is killed: median {statistics.median(recoveries):.1f} s "
            f"(samples {samples} s), lease {LEASE_S} s"
        )
    return "\n".join(lines)

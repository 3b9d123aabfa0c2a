"""coordinator: the SQLite coordinator's throughput through launcher's Python API.

allocations:  1,000 `SqliteCoordinator.create_task` calls from 16 processes on one fresh state
              store (one prefix, so every call takes the next number of the same counter);
              allocations/s over the wall time from the first call to the last return.
              Duplicates (IDs or numbers handed out twice, or a gap) must be 0.
  bare:       1,000 plain autocommit INSERTs into a fresh table, WAL mode, from 16 processes.
transitions:  one process, `SqliteCoordinator.transition` compare-and-set round trips
              (active -> implementing -> active -> ...).
  bare:       one process, `UPDATE t SET status = ? WHERE id = ? AND status = ?` in autocommit.

Both bare baselines use synchronous = FULL like launcher's store, so the figures compare the
same durability (one WAL fsync per commit).
"""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkError, BenchResult, Context, Figure, Target

ALLOCATIONS = 1_000
PROCESSES = 16
TRANSITIONS_FULL = 1_000
TRANSITIONS_QUICK = 200
PREFIX = "bench"
BARRIER_TIMEOUT_S = 300.0
FSYNC_PROBES = 200


def run(ctx: Context) -> BenchResult:
    repeats = ctx.repeats(full=5, quick=3)
    transitions = TRANSITIONS_QUICK if ctx.options.quick else TRANSITIONS_FULL
    folder = ctx.tmp / "coordinator"
    folder.mkdir()
    rates: dict[str, list[float]] = {"alloc": [], "insert": [], "transition": [], "cas": []}
    duplicates: list[float] = []
    for i in range(repeats):
        pair = [("alloc", _allocations), ("insert", _inserts)]
        for kind, measure in pair if i % 2 == 0 else pair[::-1]:
            rate, dups = measure(folder / f"{kind}-{i}.db")
            rates[kind].append(rate)
            if kind == "alloc":
                duplicates.append(float(dups))
        pair = [("transition", _transitions), ("cas", _bare_cas)]
        for kind, measure in pair if i % 2 == 0 else pair[::-1]:
            rates[kind].append(measure(folder / f"{kind}-{i}.db", transitions))
    fsync_s = _fsync_latency(folder / "fsync.probe")
    result = BenchResult("coordinator")
    result.figures += [
        Figure(
            "coordinator",
            f"ID allocations, {PROCESSES} processes",
            "/s",
            rates["alloc"],
            rates["insert"],
            f"plain INSERTs, WAL, {PROCESSES} processes",
            higher_is_better=True,
            target=Target("min", 1000),
        ),
        Figure(
            "coordinator",
            f"duplicate IDs in {ALLOCATIONS:,} allocations",
            "count",
            duplicates,
            target=Target("equals", 0),
        ),
        Figure(
            "coordinator",
            "status transitions (CAS), 1 process",
            "/s",
            rates["transition"],
            rates["cas"],
            "UPDATE ... WHERE status = ?, 1 process",
            higher_is_better=True,
        ),
    ]
    result.details["coordinator"] = {
        "allocations": ALLOCATIONS,
        "processes": PROCESSES,
        "transitions": transitions,
        "repeats": repeats,
        "rates_per_s": rates,
        "duplicates": duplicates,
        "sqlite": sqlite3.sqlite_version,
        "fsync_median_s": fsync_s,
    }
    result.reports.append(
        f"coordinator: one write + fsync takes {fsync_s * 1000:.2f} ms on this disk (median of {FSYNC_PROBES}): "
        f"a store that fsyncs every commit (WAL, synchronous = FULL) tops out near {1 / fsync_s:,.0f} commits/s.\n"
        f"Below that, {PROCESSES} writers are limited by waiting for SQLite's write lock: its busy handler "
        "sleeps and retries (1, 2, 5, 10 … 100 ms back-off) instead of waking when the lock is free."
    )
    return result


def _fsync_latency(path: Path) -> float:
    samples = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i in range(FSYNC_PROBES):
            start = time.perf_counter()
            os.pwrite(fd, b"x" * 4096, (i % 8) * 4096)
            os.fsync(fd)
            samples.append(time.perf_counter() - start)
    finally:
        os.close(fd)
    return statistics.median(samples)


def _shares(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def _spawn(target: Any, db: Path) -> list[tuple[int, list[Any], float, float]]:
    """Run `target(db, count, worker, barrier, queue)` in PROCESSES processes released together."""
    mp = multiprocessing.get_context("fork")
    barrier = mp.Barrier(PROCESSES)
    queue = mp.Queue()
    procs = [
        mp.Process(target=target, args=(str(db), count, w, barrier, queue), daemon=True)
        for w, count in enumerate(_shares(ALLOCATIONS, PROCESSES))
    ]
    for p in procs:
        p.start()
    try:
        results = [queue.get(timeout=BARRIER_TIMEOUT_S + 300) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    failed = [r for r in results if isinstance(r, str)]
    if failed:
        raise BenchmarkError(f"a coordinator worker failed: {failed[0]}")
    return results


def _allocations(db: Path) -> tuple[float, int]:
    from launcher.adapters.store.sqlite import SqliteCoordinator

    SqliteCoordinator(db).close()  # create and migrate before the clock starts
    results = _spawn(_alloc_worker, db)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    ids = [i for r in results for i in r[1]]
    numbers = [int(i.split("-")[1]) for i in ids]
    repeated = sum(c - 1 for c in Counter(ids).values()) + sum(c - 1 for c in Counter(numbers).values())
    gaps = len(set(range(1, ALLOCATIONS + 1)) - set(numbers))
    return len(ids) / wall, repeated + gaps


def _alloc_worker(db: str, count: int, worker: int, barrier: Any, queue: Any) -> None:
    try:
        from launcher.adapters.store.sqlite import SqliteCoordinator
        from launcher.core.tasks import case_task_doc
        from launcher.models import NewTask

        store = SqliteCoordinator(Path(db))
        doc = case_task_doc(PREFIX)
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        start = time.monotonic()
        ids = []
        for i in range(count):
            new = NewTask(prefix=PREFIX, slug=f"w{worker}-{i}", title=f"worker {worker} task {i}", repo=PREFIX, doc=doc)
            ids.append(store.create_task(new).id)
        end = time.monotonic()
        store.close()
        queue.put((worker, ids, start, end))
    except Exception as exc:  # reported to the parent, which fails the benchmark
        queue.put(f"worker {worker}: {type(exc).__name__}: {exc}")


def _bare_db(db: Path, schema: str) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(schema)
    conn.close()


def _connect(db: str | Path) -> sqlite3.Connection:
    conn = sqlite3.connect(db, timeout=60, isolation_level=None)
    conn.execute("PRAGMA synchronous = FULL")
    return conn


def _inserts(db: Path) -> tuple[float, int]:
    _bare_db(db, "CREATE TABLE t (id INTEGER PRIMARY KEY, worker INTEGER NOT NULL, n INTEGER NOT NULL)")
    results = _spawn(_insert_worker, db)
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    return sum(len(r[1]) for r in results) / wall, 0


def _insert_worker(db: str, count: int, worker: int, barrier: Any, queue: Any) -> None:
    try:
        conn = _connect(db)
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
        start = time.monotonic()
        rows = [conn.execute("INSERT INTO t (worker, n) VALUES (?, ?)", (worker, i)).lastrowid for i in range(count)]
        end = time.monotonic()
        conn.close()
        queue.put((worker, rows, start, end))
    except Exception as exc:
        queue.put(f"worker {worker}: {type(exc).__name__}: {exc}")


def _transitions(db: Path, count: int) -> float:
    from launcher.adapters.store.sqlite import SqliteCoordinator
    from launcher.core.tasks import case_task_doc
    from launcher.core.transitions import TaskStatus
    from launcher.models import NewTask

    store = SqliteCoordinator(db)
    try:
        task = store.create_task(
            NewTask(prefix=PREFIX, slug="cas", title="cas", repo=PREFIX, doc=case_task_doc(PREFIX))
        )
        steps = [(TaskStatus.ACTIVE, TaskStatus.IMPLEMENTING), (TaskStatus.IMPLEMENTING, TaskStatus.ACTIVE)]
        start = time.perf_counter()
        for i in range(count):
            expected, target = steps[i % 2]
            store.transition(task.id, expected, target, reason="benchmark", actor="benchmark")
        return count / (time.perf_counter() - start)
    finally:
        store.close()


def _bare_cas(db: Path, count: int) -> float:
    _bare_db(db, "CREATE TABLE t (id TEXT PRIMARY KEY, status TEXT NOT NULL)")
    conn = _connect(db)
    try:
        conn.execute("INSERT INTO t VALUES ('cas', 'active')")
        steps = [("active", "implementing"), ("implementing", "active")]
        start = time.perf_counter()
        for i in range(count):
            expected, target = steps[i % 2]
            cur = conn.execute("UPDATE t SET status = ? WHERE id = ? AND status = ?", (target, "cas", expected))
            if cur.rowcount != 1:
                raise BenchmarkError("the bare compare-and-set lost its row")
        return count / (time.perf_counter() - start)
    finally:
        conn.close()

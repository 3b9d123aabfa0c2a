"""Races against the PostgreSQL coordinator: real processes, one throwaway server, a fresh database.

Each race starts N fresh interpreters running this file as a worker (``python THIS MODE …``),
lets them open their own coordinator, holds them at a start barrier (each touches
``ready-<i>`` and blocks at the start gate, start_gate.py), releases them together, and collects one JSON report line
from each. An overall deadline bounds every race and workers still alive at the end are killed.

The promises under test are the ones several build boxes sharing one database depend on:
task numbers handed out once and without gaps, one winner per compare-and-set, one claim per
queued task, one attempt number and one global run number per run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from start_gate import closed_gate, wait_at_gate

BARRIER_TIMEOUT_S = 60.0
RACE_DEADLINE_S = 90.0


# -- the worker side -----------------------------------------------------------------------


def _wait_for_go(barrier: Path, index: int) -> None:
    wait_at_gate(barrier, index, BARRIER_TIMEOUT_S)


def _worker(mode: str, barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    from launcher.adapters.store import open_coordinator
    from launcher.core.transitions import TaskStatus
    from launcher.errors import TransitionConflictError
    from launcher.models import NewRun, NewTask

    with open_coordinator(args["url"]) as store:
        _wait_for_go(barrier, index)
        if mode == "create":
            ids = [
                store.create_task(
                    NewTask(prefix="demo", slug=f"w{index}-{n}", title="t", repo="demo", doc={"title": "t"})
                ).id
                for n in range(args["count"])
            ]
            return {"ids": ids}
        if mode == "transition":
            try:
                _, record = store.transition(
                    args["task"], TaskStatus.ACTIVE, TaskStatus.IMPLEMENTING, reason=f"w{index}", actor=f"w{index}"
                )
            except TransitionConflictError as exc:
                return {"outcome": "conflict", "actual": exc.actual}
            return {"outcome": "won", "seq": record.seq}
        if mode == "claim":
            owner = f"worker-{index}"
            claimed = []
            while (task := store.claim_next(owner, 60)) is not None:
                assert task.lease_owner == owner
                claimed.append(task.id)
                if not store.release_claim(task.id, owner, done=True):
                    return {"error": f"lost the lease of {task.id}"}
            return {"claimed": claimed}
        if mode == "runs":
            tasks = args["tasks"]
            runs = []
            for n in range(args["count"]):
                run = store.create_run(
                    NewRun(task_id=tasks[(index + n) % len(tasks)], image=None, owner=None, worktrees_dir="/w")
                )
                runs.append({"id": run.id, "task": run.task_id, "attempt": run.attempt, "seq": run.seq})
            return {"runs": runs}
        if mode == "subnets":
            held = []
            for n in range(args["count"]):
                run_id = f"R-{index}.{n}"
                held.append([store.lease_subnet(run_id, args["slots"]), run_id])
                if n % 2:
                    store.release_subnet(run_id)
            return {"held": held}
    raise SystemExit(f"unknown mode {mode!r}")


def _worker_main(argv: list[str]) -> None:
    mode, barrier, index, args = argv[0], Path(argv[1]), int(argv[2]), json.loads(argv[3])
    print(json.dumps(_worker(mode, barrier, index, args)), flush=True)


if __name__ == "__main__":
    _worker_main(sys.argv[1:])
    sys.exit(0)


# -- the test side -------------------------------------------------------------------------

import pytest  # noqa: E402
from pg import PgServer, pg_server, pg_url  # noqa: E402

from launcher.adapters.store import open_coordinator  # noqa: E402
from launcher.core.transitions import TaskStatus  # noqa: E402
from launcher.models import NewRun, NewTask  # noqa: E402

__all__ = ["PgServer", "pg_server", "pg_url"]

pytestmark = pytest.mark.slow


def race(mode: str, workdir: Path, args: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run one worker per entry of ``args``, released together; return their reports in order."""
    barrier = workdir / "barrier"
    barrier.mkdir(parents=True)
    with closed_gate(barrier) as open_gate:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LAUNCHER_"))}
        procs: list[subprocess.Popen[bytes]] = []
        logs = []
        deadline = time.monotonic() + RACE_DEADLINE_S
        try:
            for index, worker_args in enumerate(args):
                out, err = workdir / f"{index}.out", workdir / f"{index}.err"
                logs.append((out, err))
                with out.open("wb") as stdout, err.open("wb") as stderr:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, __file__, mode, str(barrier), str(index), json.dumps(worker_args)],
                            stdout=stdout,
                            stderr=stderr,
                            env=env,
                            cwd=workdir,
                        )
                    )
            while len(list(barrier.glob("ready-*"))) < len(procs):
                dead = [i for i, p in enumerate(procs) if p.poll() is not None]
                assert not dead, f"worker {dead[0]} died before the start: {logs[dead[0]][1].read_text()[-3000:]}"
                assert time.monotonic() < deadline, "workers did not reach the start barrier in time"
                time.sleep(0.01)
            open_gate()
            for proc in procs:
                remaining = deadline - time.monotonic()
                try:
                    proc.wait(timeout=max(remaining, 0.001))
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"race {mode!r} overran its {RACE_DEADLINE_S:.0f}s deadline") from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        reports = []
        for index, (proc, (out, err)) in enumerate(zip(procs, logs, strict=True)):
            lines = out.read_text().splitlines()
            failure = f"worker {index} failed ({proc.returncode}): {err.read_text()[-3000:]}"
            assert proc.returncode == 0, failure
            assert lines, failure
            reports.append(json.loads(lines[-1]))
        return reports


def new_task(slug: str, *, queued: bool = False) -> NewTask:
    return NewTask(prefix="demo", slug=slug, title="t", repo="demo", queued=queued, doc={"title": "t"})


def test_sixteen_processes_create_1600_tasks_numbered_1_to_1600(pg_url: str, tmp_path: Path) -> None:
    workers, count = 16, 100
    open_coordinator(pg_url).close()
    reports = race("create", tmp_path, [{"url": pg_url, "count": count}] * workers)
    ids = [task_id for report in reports for task_id in report["ids"]]
    assert len(ids) == len(set(ids)) == workers * count, "an ID was handed out twice"
    numbers = sorted(int(task_id.split("-")[1]) for task_id in ids)
    assert numbers == list(range(1, workers * count + 1)), "numbers have gaps or duplicates"
    for report in reports:  # each worker saw its own numbers rise
        mine = [int(task_id.split("-")[1]) for task_id in report["ids"]]
        assert mine == sorted(mine)
    with open_coordinator(pg_url) as store:
        stored = store.list_tasks()
        assert sorted(t.id for t in stored) == sorted(ids)
        assert [t.number for t in stored] == list(range(1, workers * count + 1))
        assert store.create_task(new_task("after")).number == workers * count + 1


def test_sixteen_processes_race_one_transition_and_one_wins(pg_url: str, tmp_path: Path) -> None:
    with open_coordinator(pg_url) as store:
        task = store.create_task(new_task("contested"))
    reports = race("transition", tmp_path, [{"url": pg_url, "task": task.id}] * 16)
    outcomes = Counter(r["outcome"] for r in reports)
    assert outcomes == {"won": 1, "conflict": 15}
    assert {r["actual"] for r in reports if r["outcome"] == "conflict"} == {"implementing"}
    with open_coordinator(pg_url) as store:
        final = store.get_task(task.id)
        history = store.history(task.id)
    assert (final.status, final.version) == (TaskStatus.IMPLEMENTING, 2)
    assert [(h.from_status, h.to_status) for h in history] == [
        (None, TaskStatus.ACTIVE),
        (TaskStatus.ACTIVE, TaskStatus.IMPLEMENTING),
    ]
    (winner,) = [r for r in reports if r["outcome"] == "won"]
    assert history[1].seq == winner["seq"]
    assert history[1].actor == f"w{reports.index(winner)}"


def test_eight_processes_drain_a_queue_of_40_each_task_claimed_once(pg_url: str, tmp_path: Path) -> None:
    with open_coordinator(pg_url) as store:
        tasks = [store.create_task(new_task(f"q{n}", queued=True)) for n in range(40)]
    reports = race("claim", tmp_path, [{"url": pg_url}] * 8)
    assert all("error" not in r for r in reports), reports
    claimed = [task_id for r in reports for task_id in r["claimed"]]
    assert sorted(claimed) == sorted(t.id for t in tasks), "a task was claimed twice or never"
    with open_coordinator(pg_url) as store:
        for task in store.list_tasks():
            assert (task.claims, task.queued, task.lease_owner) == (1, False, None), task.id
        assert store.claim_next("late", 60) is None


def test_eight_processes_create_runs_with_unique_attempts_and_seqs(pg_url: str, tmp_path: Path) -> None:
    workers, count = 8, 10
    with open_coordinator(pg_url) as store:
        tasks = [store.create_task(new_task(f"r{n}")).id for n in range(2)]
    reports = race("runs", tmp_path, [{"url": pg_url, "tasks": tasks, "count": count}] * workers)
    runs = [run for r in reports for run in r["runs"]]
    assert sorted(r["seq"] for r in runs) == list(range(1, workers * count + 1))
    assert len({r["id"] for r in runs}) == len(runs)
    for task_id in tasks:
        attempts = sorted(r["attempt"] for r in runs if r["task"] == task_id)
        assert attempts == list(range(1, len(attempts) + 1))
    with open_coordinator(pg_url) as store:
        assert len(store.list_runs()) == workers * count
        assert store.create_run(NewRun(task_id=tasks[0], image=None, owner=None, worktrees_dir="/w")).seq == 81


def test_sixteen_processes_leasing_subnets_never_share_a_slot(pg_url: str, tmp_path: Path) -> None:
    open_coordinator(pg_url).close()
    race("subnets", tmp_path, [{"url": pg_url, "count": 20, "slots": 4096}] * 16)
    with open_coordinator(pg_url) as store:
        leases = store.subnet_leases()
    # Every worker kept its even-numbered leases: 16 x 10 runs, each on its own slot.
    assert len(leases) == 160
    assert sorted(leases.values()) == sorted(f"R-{w}.{n}" for w in range(16) for n in range(0, 20, 2))

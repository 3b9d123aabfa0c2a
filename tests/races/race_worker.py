"""One contender in a race: a fresh interpreter started by ``race_harness.race``.

Usage: ``python race_worker.py MODE BARRIER_DIR INDEX JSON_ARGS``. The worker does its
imports first, then says it is ready (``ready-INDEX``) and blocks at the start gate (start_gate.py) so that
all contenders enter the race together. Whatever it has to
report goes to stdout as one JSON line at the end; modes that exec the CLI report through
the CLI's own exit code and output instead.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from start_gate import wait_at_gate

BARRIER_TIMEOUT_S = 120.0


def wait_for_go(barrier: Path, index: int) -> None:
    wait_at_gate(barrier, index, BARRIER_TIMEOUT_S)


def task_service(root: Path) -> Any:
    """TaskService on the SQLite coordinator and the task files of one case root."""
    from launcher.adapters.store.sqlite import SqliteCoordinator
    from launcher.adapters.taskfiles import TaskFiles
    from launcher.core.tasks import TaskService
    from launcher.settings import Layout

    layout = Layout(root)
    store = SqliteCoordinator(layout.state_db)
    return TaskService(store, TaskFiles(layout.tasks_dir, layout.locks_dir, store))


def create_api(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    from launcher.core.tasks import RepoRef

    wait_for_go(barrier, index)
    # The coordinator is opened after the barrier on purpose: on a fresh root, all
    # contenders race to create and migrate the database too.
    tasks = task_service(Path(args["root"]))
    repo = RepoRef(name=args["repo"], path=None)
    ids = [tasks.create(repo, f"worker {index} task {n}").id for n in range(args["count"])]
    tasks.store.close()
    return {"ids": ids}


def create_cli(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    wait_for_go(barrier, index)
    results = []
    for n in range(args["count"]):
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "launcher",
                "--root",
                args["root"],
                "task",
                "create",
                "--repo",
                args["repo"],
                "--title",
                f"worker {index} task {n}",
                "--json",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        task_id = json.loads(proc.stdout)["id"] if proc.returncode == 0 else None
        results.append({"rc": proc.returncode, "id": task_id, "stderr": proc.stderr[-2000:]})
    return {"results": results}


def set_status_api(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    from launcher.errors import LauncherError

    tasks = task_service(Path(args["root"]))
    wait_for_go(barrier, index)
    try:
        task = tasks.set_status(args["ref"], args["target"], expected=args["expected"], actor=f"w{index}")
    except LauncherError as exc:
        return {"ok": False, "exit_code": exc.exit_code, "message": exc.message}
    finally:
        tasks.store.close()
    return {"ok": True, "status": task.status.value}


def exec_cli(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Become a plain `python -m launcher ...` process once the barrier opens."""
    wait_for_go(barrier, index)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "launcher", *args["argv"]])
    raise AssertionError("unreachable")


def churn(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Move one task back and forth (CAS from what it reads) and re-sync its files."""
    from launcher.errors import TransitionConflictError

    tasks = task_service(Path(args["root"]))
    flip = {"active": "implementing", "implementing": "active"}
    wait_for_go(barrier, index)
    moved = conflicts = syncs = 0
    for n in range(args["rounds"]):
        if (n + index) % 3 == 0:
            tasks.sync_files(args["ref"])
            syncs += 1
            continue
        current = tasks.get(args["ref"]).status.value
        try:
            tasks.set_status(args["ref"], flip[current], expected=current, actor=f"w{index}")
            moved += 1
        except TransitionConflictError:
            conflicts += 1
    tasks.store.close()
    return {"moved": moved, "conflicts": conflicts, "syncs": syncs}


def read_json_file(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Read the task file in a tight loop until the writers are done; every read must parse."""
    path = Path(args["path"])
    wait_for_go(barrier, index)
    reads, bad, statuses = 0, [], set()
    deadline = time.monotonic() + BARRIER_TIMEOUT_S
    finished = False
    while not finished and time.monotonic() < deadline:
        # Checked before the read, so one read always follows the writers' last write.
        finished = len(list(barrier.glob("done-*"))) >= args["writers"]
        data = path.read_bytes()
        reads += 1
        try:
            doc = json.loads(data)
            if doc.get("id") != args["task_id"]:
                bad.append(f"wrong id in {data[:200]!r}")
            statuses.add(doc.get("status"))
        except ValueError as exc:
            bad.append(f"{exc}: {data[:200]!r}")
    return {
        "finished": finished,
        "reads": reads,
        "bad": bad[:5],
        "bad_count": len(bad),
        "statuses": sorted(statuses),
        "last": data.decode("utf-8", "replace"),
    }


def lock_counter(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Increment a counter under launcher's file lock; an O_EXCL marker catches overlap."""
    from launcher.adapters.locks import file_lock

    lock, counter, occupied = Path(args["lock"]), Path(args["counter"]), Path(args["occupied"])
    wait_for_go(barrier, index)
    overlaps = 0
    for _ in range(args["rounds"]):
        with file_lock(lock, timeout=60.0):
            try:
                fd = os.open(occupied, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
            except OSError as exc:
                if exc.errno != errno.EEXIST:
                    raise
                overlaps += 1  # someone else is inside the lock at the same time
                fd = None
            value = int(counter.read_text())
            os.sched_yield()  # widen the read-modify-write window a lost update needs
            counter.write_text(str(value + 1))
            if fd is not None:
                os.close(fd)
                occupied.unlink()
    return {"overlaps": overlaps}


def lease_subnets(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Lease, hold and release run-network slots as runs do, many times over."""
    from launcher.adapters.store.sqlite import SqliteCoordinator

    store = SqliteCoordinator(Path(args["db"]))
    wait_for_go(barrier, index)
    held = []
    for n in range(args["count"]):
        run_id = f"R-{index}.{n}"
        held.append((store.lease_subnet(run_id, args["slots"]), run_id))
        if n % 2:
            store.release_subnet(run_id)
    store.close()
    return {"held": held}


def claim_pool_slots(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    """Take ready pool slots as `launcher run` does (list the ready ones, rename one into this
    run's folder; a lost race moves on to the next), one slot per listing, until none is left."""
    from launcher.adapters.poolslots import PoolSlots

    slots = PoolSlots(Path(args["pool"]), Path(args["worktrees"]))
    runs = Path(args["runs"])
    wait_for_go(barrier, index)
    taken, lost = [], 0
    while ready := slots.ready():
        for slot in ready:
            if slots.claim(slot.id, runs / f"run-{index}-{len(taken) + lost}"):
                taken.append(slot.id)
                break
            lost += 1
    return {"taken": taken, "lost": lost}


MODES = {
    "claim-pool-slots": claim_pool_slots,
    "lease-subnets": lease_subnets,
    "create-api": create_api,
    "create-cli": create_cli,
    "set-status-api": set_status_api,
    "exec-cli": exec_cli,
    "churn": churn,
    "read-json": read_json_file,
    "lock-counter": lock_counter,
}


def main() -> None:
    mode, barrier, index, raw = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    # Import the code under test before the barrier, so start-up cost stays out of the race.
    import launcher.adapters.locks
    import launcher.adapters.store.sqlite
    import launcher.adapters.taskfiles
    import launcher.core.tasks  # noqa: F401

    result = MODES[mode](barrier, index, json.loads(raw))
    print(json.dumps(result), flush=True)
    (barrier / f"done-{index}").touch()


if __name__ == "__main__":
    main()

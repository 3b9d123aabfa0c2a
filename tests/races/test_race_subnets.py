"""Run-network subnets under contention: 16 processes lease, hold and release slots at once.

Two runs on one subnet would share a network, the very thing per-run networks exist to
prevent; the slot table's primary key and the coordinator's write lock must keep every slot
held by one run at a time.
"""

from __future__ import annotations

from pathlib import Path

from race_harness import race

from launcher.adapters.store.sqlite import SqliteCoordinator

WORKERS = 16
LEASES_PER_WORKER = 20


def test_sixteen_processes_leasing_subnets_never_share_a_slot(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    SqliteCoordinator(db).close()
    outcomes = race(
        tmp_path,
        [("lease-subnets", {"db": str(db), "count": LEASES_PER_WORKER, "slots": 4096})] * WORKERS,
        deadline_s=120,
    )
    with SqliteCoordinator(db) as store:
        leases = store.subnet_leases()
    kept = {run_id for o in outcomes for slot, run_id in o.report["held"] if int(run_id.rsplit(".", 1)[1]) % 2 == 0}
    assert len(leases) == WORKERS * LEASES_PER_WORKER // 2
    assert set(leases.values()) == kept
    # Released slots are reused, so the pool stays compact: never more slots than leases alive.
    assert max(leases) < WORKERS * LEASES_PER_WORKER

"""Warm pool slots under contention: 16 processes take slots at once, as 16 `launcher run`s would.

A slot is a started container with one worktree; two runs taking the same slot would share
both. The hand-over is a rename(2) of the slot's folder into the run's own folder, so each
slot must end up with exactly one taker and its folder in exactly one place.
"""

from __future__ import annotations

import json
from pathlib import Path

from race_harness import race

from launcher.adapters.poolslots import PoolSlots
from launcher.models import PoolSlot, utcnow

WORKERS = 16
SLOTS = 64


def _ready_slots(pool: PoolSlots, count: int) -> set[str]:
    made = set()
    for n in range(count):
        with pool.new_slot() as (slot_id, folder):
            slot = PoolSlot(
                id=slot_id,
                repo="/repo",
                project="repo",
                image="img",
                image_id="sha256:0",
                base_sha="0" * 40,
                network="none",
                uid=60000 + n,
                gid=60000 + n,
                container_id=f"c{n}",
                memory="1g",
                cpus=1.0,
                pids_limit=64,
                tasks_view=True,
                created_at=utcnow(),
            )
            pool.record(folder, slot)
            pool.publish(slot_id)
            made.add(slot_id)
    return made


def test_sixteen_processes_taking_slots_never_share_one(tmp_path: Path) -> None:
    pool_dir, runs = tmp_path / "pool", tmp_path / "sandboxes"
    pool = PoolSlots(pool_dir, tmp_path / "worktrees")
    made = _ready_slots(pool, SLOTS)
    args = {"pool": str(pool_dir), "worktrees": str(tmp_path / "worktrees"), "runs": str(runs)}
    outcomes = race(tmp_path / "race", [("claim-pool-slots", args)] * WORKERS, deadline_s=120)

    taken = [slot_id for o in outcomes for slot_id in o.report["taken"]]
    winners = len({o.index for o in outcomes if o.report["taken"]})
    lost = sum(o.report["lost"] for o in outcomes)
    assert sorted(taken) == sorted(made), f"every slot taken exactly once ({winners} winners, {lost} lost claims)"
    # Each slot's folder (with its record) is in exactly one run's folder, and none is left ready.
    moved = [json.loads((folder / "slot.json").read_text())["id"] for folder in runs.iterdir()]
    assert sorted(moved) == sorted(made)
    assert pool.ready() == []

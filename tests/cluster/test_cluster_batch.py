"""Batches on several boxes against one coordinator: every task once, none twice at a time, none lost.

Each box (scripts/cluster.sh) is its own machine: its own Docker Engine, case root and clone of
the forge's demo repository, sharing only the PostgreSQL coordinator and the forge. What happened
is judged from the coordinator's history (``run_events.at`` is the database's clock) and the forge.
"""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import datetime

import pytest
from clusterkit import Cluster, overlaps, owner_host, running_intervals
from helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(1200)]

LEASE_S = 10
# A run that commits one file naming its run: the forge's copy says which attempt made it.
COMMITS = 'echo "task {n} by $CASE_RUN_ID" > out-{n}.txt && git add out-{n}.txt && git commit -q -m "task {n}"'


def _batch_args() -> list[str]:
    return ["--lease", str(LEASE_S), "--poll", "0.5", "--network", "none"]


def _check_on_forge(cluster: Cluster, runs: list[dict], numbers: dict[str, int]) -> None:
    """Each run's branch is on the forge, at the commit it published, holding its agent's file."""
    branches = cluster.forge_branches()
    main = branches["main"]
    for run in runs:
        published = run["details"].get("publish") or {}
        assert published.get("pushed") is True, (run["id"], published)
        assert branches.get(run["branch"]) == published["sha"], (run["id"], run["branch"])
        n = numbers[run["task_id"]]
        assert cluster.forge_show(run["branch"], f"out-{n}.txt") == f"task {n} by {run['id']}\n"
        assert cluster.forge_git("rev-parse", f"{run['branch']}~1").strip() == main


def test_thirty_tasks_on_three_boxes_each_run_exactly_once(cluster: Cluster) -> None:
    title = f"Spread {secrets.token_hex(2)}"
    ids = cluster.queue_tasks(30, title=title, command=COMMITS)
    numbers = {task: n for n, task in enumerate(ids, start=1)}
    batches = [cluster.batch(i, *_batch_args()) for i in (1, 2, 3)]

    runs = cluster.wait_all_settled(ids, timeout=300)
    for batch in batches:
        code = batch.wait(timeout=120)
        assert code == 0, f"the batch on box {batch.box} exited {code}:\n{batch.output()[-3000:]}"
    runs = cluster.runs(ids)  # as the batches left them: each publish is recorded after the run's state

    # Exactly one run per task, and it exited 0.
    per_task = Counter(r["task_id"] for r in runs)
    assert per_task == Counter(ids), f"runs per task: {per_task}"
    assert {(r["state"], r["exit_code"]) for r in runs} == {("exited", 0)}, cluster.report(ids)
    # Never two attempts of one task running at once, on the coordinator's clock.
    assert not overlaps(running_intervals(cluster.events(ids)))
    # The work went to more than one box.
    hosts = Counter(owner_host(r) for r in runs)
    assert set(hosts) <= set(cluster.box_names), hosts
    assert len(hosts) > 1, f"one box did all the work: {hosts}"
    print(f"\n30 tasks on 3 boxes: runs per box {dict(hosts)}")
    _check_on_forge(cluster, runs, numbers)


def test_a_killed_box_s_task_runs_again_elsewhere_once_its_lease_expires(
    cluster: Cluster, record_property: pytest.RecordProperty
) -> None:
    title = f"Killed {secrets.token_hex(2)}"
    # Long enough to be killed mid-run; every box gets two.
    ids = cluster.queue_tasks(6, title=title, command="sleep 8 && " + COMMITS)
    numbers = {task: n for n, task in enumerate(ids, start=1)}
    batches = [cluster.batch(i, *_batch_args()) for i in (1, 2, 3)]
    victim_host = cluster.box_name(1)

    def running_on_box_1() -> list[dict]:
        return [r for r in cluster.runs(ids) if r["state"] == "running" and owner_host(r) == victim_host]

    victims = wait_for(running_on_box_1, timeout=180, what="a run on box 1", interval=0.5)
    killed_at = cluster.db_now()
    cluster.kill(1)

    runs = cluster.wait_all_settled(ids, timeout=300)
    for batch in batches[1:]:
        code = batch.wait(timeout=120)
        assert code == 0, f"the batch on box {batch.box} exited {code}:\n{batch.output()[-3000:]}"
    runs = cluster.runs(ids)  # as the batches left them: each publish recorded

    by_id = {r["id"]: r for r in runs}
    lost_tasks = {v["task_id"] for v in victims}
    for victim in victims:
        # The killed box's attempt is settled as lost by another box (not a result, not published).
        assert by_id[victim["id"]]["state"] == "lost", by_id[victim["id"]]
        assert victim["branch"] not in cluster.forge_branches()
    # Nothing lost: every task has exactly one exited run, its result.
    exited = [r for r in runs if r["state"] == "exited"]
    assert Counter(r["task_id"] for r in exited) == Counter(ids), cluster.report(ids)
    assert {r["exit_code"] for r in exited} == {0}
    assert {r["state"] for r in runs} <= {"exited", "lost"}, cluster.report(ids)
    assert not overlaps(running_intervals(cluster.events(ids)))
    _check_on_forge(cluster, exited, numbers)

    # Recovery: from the kill to the task's new run starting, both on the coordinator's clock.
    events = cluster.events(lost_tasks)
    for task in sorted(lost_tasks):
        (again,) = [r for r in exited if r["task_id"] == task]
        assert owner_host(again) != victim_host, again
        (started,) = [e for e in events if e["run_id"] == again["id"] and e["to_state"] == "running"]
        recovery = (datetime.fromisoformat(started["at"]) - killed_at).total_seconds()
        where = owner_host(again)
        print(f"\nbox 1 killed mid-run: {task} running again on {where} after {recovery:.1f}s (lease {LEASE_S}s)")
        record_property(f"recovery_seconds[{task}]", f"{recovery:.2f}")
        # Not before the lease could have expired (renewed every quarter of it), and not much after.
        assert LEASE_S * 0.75 - 1 <= recovery <= LEASE_S + 45, recovery

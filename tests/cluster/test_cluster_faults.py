"""Boxes cut off, paused, a coordinator restarted, clocks skewed: no task lost, none run as two results.

A box cut off from the coordinator (or frozen) for longer than its lease loses its claim: another
box takes the task over and its attempt becomes the task's result. The first box's attempt goes
on; when it ends, its settle and its publish are compare-and-set on its claim's fencing token,
so it ends ``superseded``: its work kept (on its own branch on the box, its tip on the forge as
``refs/launcher/runs/<run>/branch``), never the task's branch, never the task's result.

What happened is judged from the coordinator (``run_events.at``: the database's clock) and the forge.
"""

from __future__ import annotations

import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from clusterkit import Cluster, overlaps, owner_host, running_intervals
from helpers import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.docker, pytest.mark.slow, pytest.mark.timeout(900)]

LEASE_S = 10
COMMITS = 'echo "task {n} by $CASE_RUN_ID" > out-{n}.txt && git add out-{n}.txt && git commit -q -m "task {n}"'
# The first attempt (run IDs end in .<attempt>) is slow enough to be taken over; later ones are quick.
SLOW_FIRST = 'case "$CASE_RUN_ID" in *.1) sleep 45 ;; esac; ' + COMMITS


def _batch_args() -> list[str]:
    return ["--lease", str(LEASE_S), "--poll", "0.5", "--network", "none"]


def _running_on(cluster: Cluster, task: str, box: int) -> dict[str, Any] | None:
    host = cluster.box_name(box)
    return next(
        (r for r in cluster.runs([task]) if r["state"] == "running" and owner_host(r) == host),
        None,
    )


def _run(cluster: Cluster, run_id: str) -> dict[str, Any]:
    (found,) = [r for r in cluster.runs() if r["id"] == run_id]
    return found


def _taken_over_while_away(cluster: Cluster, away: str) -> None:
    """Box 1 runs the task's first attempt; it goes ``away`` (cut or pause) past its lease; box 2
    takes the task over and its attempt is the result; box 1 comes back and its attempt ends
    superseded, its work kept."""
    (task,) = cluster.queue_tasks(1, title=f"Away {away} {secrets.token_hex(2)}", command=SLOW_FIRST)
    first_batch = cluster.batch(1, *_batch_args())
    first = wait_for(
        lambda: _running_on(cluster, task, 1), timeout=180, what="the first attempt running on box 1", interval=0.5
    )
    if away == "cut":
        cluster.cut(1)
    else:
        cluster.pause(1)
    gone_at = cluster.db_now()
    cluster.batch(2, *_batch_args())

    # Box 2 takes the task over once box 1's lease has run out, and its attempt is the result.
    def second_exited() -> dict[str, Any] | None:
        # Published too: the push is recorded after the run's state (under the same claim).
        runs = cluster.runs([task])
        return next((r for r in runs if r["id"] != first["id"] and r["state"] == "exited" and _published(r)), None)

    second = wait_for(second_exited, timeout=240, what="the second attempt to exit on box 2", interval=0.5)
    assert owner_host(second) == cluster.box_name(2), second
    (taken,) = [e for e in cluster.events([task]) if e["run_id"] == second["id"] and e["to_state"] == "running"]
    print(f"\nbox 1 {away}: task taken over on box 2 after {_seconds(gone_at, taken['at']):.1f}s (lease {LEASE_S}s)")

    # Box 1 comes back; its attempt finishes and settles, fenced out.
    if away == "cut":
        cluster.heal(1)
    else:
        cluster.unpause(1)
    late = wait_for(
        lambda: (r := _run(cluster, first["id"]))["state"] == "superseded" and _published(r) and r,
        timeout=240,
        what=f"box 1's attempt {first['id']} to settle superseded",
        interval=0.5,
    )
    superseded = late["details"]["superseded"]
    assert superseded["fence"] < superseded["current"], superseded
    # Its work is kept: harvested onto its own branch on box 1, its tip on the forge as a run ref.
    harvest = late["details"].get("harvest") or {}
    assert harvest.get("commits"), late["details"]
    assert not harvest.get("error"), harvest
    kept_tip = cluster.forge_refs("refs/launcher/runs/").get(f"refs/launcher/runs/{first['id']}/branch")
    assert kept_tip == harvest["tip"], (kept_tip, harvest)
    assert cluster.box(1, "git", "-C", _box_repo(cluster, late), "rev-parse", late["branch"]).stdout.strip() == kept_tip
    # Never the task's branch on the forge, never its result.
    branches = cluster.forge_branches()
    assert late["branch"] not in branches
    assert branches.get(second["branch"]) == second["details"]["publish"]["sha"]
    assert cluster.forge_show(second["branch"], "out-1.txt") == f"task 1 by {second['id']}\n"
    runs = cluster.runs([task])
    assert [r["id"] for r in runs if r["state"] == "exited"] == [second["id"]], cluster.report([task])
    assert {r["state"] for r in runs} <= {"exited", "superseded"}, cluster.report([task])
    first_batch.wait(timeout=120)  # done: its one task ended (superseded is not a success: exit 10)
    assert first_batch.proc.returncode == 10, first_batch.output()[-3000:]


def _published(run: dict[str, Any]) -> bool:
    """Whether the run's publish step is recorded (done or failed)."""
    return bool(run["details"].get("publish"))


def _box_repo(cluster: Cluster, run: dict[str, Any]) -> str:
    """Where box 1 keeps the repository the run's branch is in (its clone cache, as recorded)."""
    repo = run["details"].get("repo")
    assert isinstance(repo, str), run["details"]
    assert repo, run["details"]
    return repo


def _utc(stamp: str) -> datetime:
    """A timestamp with its offset as naive UTC (what ``Cluster.events`` gives)."""
    return datetime.fromisoformat(stamp).astimezone(UTC).replace(tzinfo=None)


def _seconds(start: datetime, at: str) -> float:
    return (datetime.fromisoformat(at) - start).total_seconds()


def test_a_box_cut_off_past_its_lease_never_settles_or_publishes_as_the_task_s_result(cluster: Cluster) -> None:
    _taken_over_while_away(cluster, "cut")


def test_a_box_paused_past_its_lease_never_settles_or_publishes_as_the_task_s_result(cluster: Cluster) -> None:
    _taken_over_while_away(cluster, "pause")


def test_a_coordinator_restarted_mid_batch_still_runs_every_task_exactly_once(cluster: Cluster) -> None:
    ids = cluster.queue_tasks(12, title=f"Restart {secrets.token_hex(2)}", command="sleep 3 && " + COMMITS)
    batches = [cluster.batch(i, *_batch_args()) for i in (1, 2, 3)]

    def several_running() -> bool:
        return sum(r["state"] == "running" for r in cluster.runs(ids)) >= 2

    wait_for(several_running, timeout=180, what="two runs in progress", interval=0.5)
    cluster.restart_db()

    runs = cluster.wait_all_settled(ids, timeout=300)
    for batch in batches:
        code = batch.wait(timeout=120)
        assert code == 0, f"the batch on box {batch.box} exited {code}:\n{batch.output()[-3000:]}"
    runs = cluster.runs(ids)  # as the batches left them: each publish recorded
    assert Counter(r["task_id"] for r in runs) == Counter(ids), cluster.report(ids)
    assert {(r["state"], r["exit_code"]) for r in runs} == {("exited", 0)}, cluster.report(ids)
    assert not overlaps(running_intervals(cluster.events(ids)))
    branches = cluster.forge_branches()
    assert all(branches.get(r["branch"]) == r["details"]["publish"]["sha"] for r in runs), cluster.report(ids)


def test_clock_skew_between_boxes_changes_nothing(cluster: Cluster) -> None:
    # An hour ahead and an hour behind: a lease judged on a box's own clock would expire at once
    # on one and never on the other. Leases run on the database's clock.
    cluster.skew(2, 3600)
    cluster.skew(3, -3600)
    ids = cluster.queue_tasks(9, title=f"Skew {secrets.token_hex(2)}", command="sleep 1 && " + COMMITS)
    batches = [cluster.batch(i, *_batch_args()) for i in (1, 2, 3)]

    runs = cluster.wait_all_settled(ids, timeout=300)
    for batch in batches:
        code = batch.wait(timeout=120)
        assert code == 0, f"the batch on box {batch.box} exited {code}:\n{batch.output()[-3000:]}"
    runs = cluster.runs(ids)  # as the batches left them: each publish recorded
    assert Counter(r["task_id"] for r in runs) == Counter(ids), cluster.report(ids)
    assert {(r["state"], r["exit_code"]) for r in runs} == {("exited", 0)}, cluster.report(ids)
    assert not overlaps(running_intervals(cluster.events(ids)))
    # The skew was real: a box's own stamp of when its run started is off by its offset.
    started = {e["run_id"]: e["at"] for e in cluster.events(ids) if e["to_state"] == "running"}
    offsets = {
        cluster.box_number(owner_host(r) or ""): (
            _utc(r["started_at"]) - datetime.fromisoformat(started[r["id"]])
        ).total_seconds()
        for r in runs
    }
    for box, expected in ((2, 3600), (3, -3600)):
        if box in offsets:
            assert abs(offsets[box] - expected) < 120, offsets
    assert len(offsets) > 1, f"one box did all the work: {offsets}"

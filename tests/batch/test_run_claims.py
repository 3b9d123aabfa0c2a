"""`launcher run TASK` takes the task's claim: two CI jobs on one task run it once.

Real processes (``python -m launcher``), real Docker and git, the coordinator on SQLite or on
the session's throwaway PostgreSQL server. The refused job must have created nothing: no run
record, no branch, no container.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Bench

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CLAIMED = 17
# A launcher whose claim lasts this long (the shipped minute would make the test wait for it).
SHORT_LEASE_S = 3.0


def short_lease_argv(bench: Bench, *args: str) -> list[str]:
    """`launcher ARGS` with claims that last SHORT_LEASE_S ([run] claim_lease in launcher.toml)."""
    (bench.root / "launcher.toml").write_text(f"[run]\nclaim_lease = {SHORT_LEASE_S}\n")
    return bench.argv(*args)


@pytest.mark.parametrize("state_backend", ["sqlite", "postgres"], indirect=True)
def test_two_jobs_started_at_once_on_one_task_run_it_once(bench: Bench) -> None:
    task = bench.create_task("Claimed once", bench.agent_command(0, sleep=4))["id"]

    jobs = [bench.popen("run", task), bench.popen("run", task)]
    results = [bench.finish(job, timeout=180) for job in jobs]

    codes = sorted(r.exit_code for r in results)
    assert codes == [0, CLAIMED], [(r.exit_code, r.stderr[-3000:]) for r in results]
    winner, loser = (jobs[0], jobs[1]) if results[0].exit_code == 0 else (jobs[1], jobs[0])
    refused = results[jobs.index(loser)]
    # The refusal names the holder (the winning launcher's process) and says what to do.
    assert f":{winner.pid}:" in refused.stderr, refused.stderr
    assert "--concurrent" in refused.stderr
    assert "launcher: run " not in refused.stderr, "the refused job announced a run"
    (run,) = bench.runs_by_task()[task]
    assert (run["state"], run["exit_code"], run["attempt"]) == ("exited", 0, 1)
    assert bench.branches() == [f"launcher/{task}/1"]
    with bench.store() as store:
        settled = store.get_task(task)
    # Released at settle; a run that exited 0 also takes its task off the queue.
    assert (settled.lease_owner, settled.queued) == (None, False)
    assert bench.matrix("--format", "json") == {"include": []}


def test_concurrent_lets_a_second_job_run_beside_the_first(bench: Bench) -> None:
    task = bench.create_task("Two attempts", bench.agent_command(0, sleep=4))["id"]

    first = bench.popen("run", task)

    def running() -> bool:
        return any(r["state"] == "running" for r in bench.runs_by_task().get(task, []))

    bench.wait_for(running, timeout=120, what="the first job's run")
    assert bench.cli("run", task).exit_code == CLAIMED
    second = bench.ok("run", task, "--concurrent")
    assert bench.finish(first, timeout=180).exit_code == 0

    runs = bench.runs_by_task()[task]
    assert sorted((r["attempt"], r["state"]) for r in runs) == [(1, "exited"), (2, "exited")]
    assert "launcher: run " in second.stderr
    assert sorted(bench.branches()) == [f"launcher/{task}/1", f"launcher/{task}/2"]


def test_a_killed_launchers_claim_expires_and_the_next_job_takes_it(bench: Bench) -> None:
    task = bench.create_task("Killed job", bench.agent_command(0, sleep=120))["id"]
    proc = subprocess.Popen(
        short_lease_argv(bench, "run", task),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=bench.env(),
        start_new_session=True,
    )
    try:

        def running() -> str | None:
            live = [r["id"] for r in bench.runs_by_task().get(task, []) if r["state"] == "running"]
            return live[0] if live else None

        dead_run = bench.wait_for(running, timeout=120, what="the doomed job's run")
        # Renewed while it lives: past its first lease, the claim is still held, and refused.
        with bench.store() as store:
            first_expiry = store.get_task(task).lease_expires
        assert first_expiry is not None
        bench.wait_for(lambda: time.time() > first_expiry + 1, timeout=30, what="the first lease's end")
        with bench.store() as store:
            renewed = store.get_task(task)
        assert renewed.lease_expires is not None
        assert renewed.lease_expires > first_expiry
        assert renewed.lease_owner is not None
        assert f":{proc.pid}:" in renewed.lease_owner
        assert bench.cli("run", task).exit_code == CLAIMED
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)

    # Nothing renews it now: it runs out on its own, and the next job takes the task.
    def expired() -> bool:
        with bench.store() as store:
            expires = store.get_task(task).lease_expires
        return expires is None or expires < time.time()

    bench.wait_for(expired, timeout=SHORT_LEASE_S * 10, what="the killed launcher's lease to run out")
    quick = "echo next > next.txt && git add next.txt && git commit -qm next"
    next_job = bench.ok("run", task, "--", "sh", "-c", quick)
    assert "launcher: run " in next_job.stderr
    runs = {r["id"]: r for r in bench.runs_by_task()[task]}
    assert len(runs) == 2
    assert runs[dead_run]["state"] == "running", "the dead launcher's run waits for gc"
    (taken,) = [r for r in runs.values() if r["id"] != dead_run]
    assert (taken["state"], taken["attempt"]) == ("exited", 2)

    # gc settles the dead run (its container goes with it).
    bench.ok("gc")
    runs = {r["id"]: r for r in bench.runs_by_task()[task]}
    assert runs[dead_run]["state"] == "lost"
    assert bench.containers() == []


def test_a_batch_workers_own_run_is_not_refused_and_others_are(bench: Bench) -> None:
    task = bench.create_task("Batch holds it", bench.agent_command(0, sleep=4))["id"]

    batch = bench.popen("batch", "--json", "--poll", "0.2")

    def running() -> bool:
        return any(r["state"] == "running" for r in bench.runs_by_task().get(task, []))

    bench.wait_for(running, timeout=120, what="the batch's run")
    refused = bench.cli("run", task)
    assert refused.exit_code == CLAIMED, refused.stderr
    with bench.store() as store:
        holder = store.get_task(task).lease_owner
    assert holder is not None
    assert f":{batch.pid}:" in holder
    assert holder in refused.stderr

    finished = bench.finish(batch, timeout=180)
    assert finished.exit_code == 0, finished.stderr[-5000:]
    (run,) = bench.runs_by_task()[task]
    assert (run["state"], run["exit_code"]) == ("exited", 0)
    with bench.store() as store:
        done = store.get_task(task)
    assert (done.lease_owner, done.queued) == (None, False)


def test_a_detached_run_holds_the_claim_and_is_refused_like_a_foreground_one(bench: Bench) -> None:
    task = bench.create_task("Detached", bench.agent_command(0, sleep=4))["id"]

    run_id = bench.ok("run", task, "--detach").stdout.strip()
    with bench.store() as store:
        holder = store.get_task(task).lease_owner
        supervisor = store.get_run(run_id).owner
    assert supervisor is not None
    # The claim is the supervisor's (the process that renews it), not the CLI's that started it.
    assert holder == f"{supervisor.host}:{supervisor.pid}:{supervisor.start_ticks}:run"
    refused = bench.cli("run", task, "--detach")
    assert refused.exit_code == CLAIMED, refused.stderr
    assert run_id in refused.stderr, "the refusal names the holder's run"

    def states() -> list[str]:
        return [r["state"] for r in bench.runs_by_task()[task]]

    bench.wait_for(lambda: states() == ["exited"], timeout=180, what="the detached run to exit")

    def released() -> bool:
        with bench.store() as store:
            done = store.get_task(task)
        return (done.lease_owner, done.queued) == (None, False)

    # The ending and the claim's release are two writes: the release follows at once, not the teardown.
    bench.wait_for(released, timeout=10, what="the detached run's claim to be given back")

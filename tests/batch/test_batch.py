"""`launcher batch`: several batches on one queue run every task exactly once.

Real Docker engine, real git, the real CLI in separate processes; the coordinator is SQLite
under the case root or a fresh database on the session's throwaway PostgreSQL server.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Bench, Result

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FINISHED = {"exited", "failed", "timed-out", "cancelled"}
TERMINAL = FINISHED | {"lost"}


def summary_of(result: Result) -> dict[str, Any]:
    """The summary a `launcher batch --json` printed on stdout (events go to stderr)."""
    try:
        return dict(json.loads(result.stdout))
    except json.JSONDecodeError:
        pytest.fail(f"batch printed no JSON summary (exit {result.exit_code}):\n{result.stdout}\n{result.stderr}")


def events_of(result: Result) -> list[dict[str, Any]]:
    events = []
    for line in result.stderr.splitlines():
        if line.startswith('{"event"'):
            event = json.loads(line)["event"]
            assert event["at"].endswith("Z"), event  # every event says when, in UTC
            events.append(event)
    return events


def outcomes(summaries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each task's outcome across several batches' summaries; a task reported twice fails the test."""
    found: dict[str, dict[str, Any]] = {}
    for summary in summaries:
        for outcome in summary["tasks"]:
            assert outcome["task_id"] not in found, f"{outcome['task_id']} reported by two batches: {summaries}"
            found[outcome["task_id"]] = outcome
    return found


# -- several batches, one queue -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state_backend", "n_tasks"),
    [("sqlite", 40), ("postgres", 40)],
    indirect=["state_backend"],
)
def test_three_batches_run_every_task_exactly_once(bench: Bench, n_tasks: int) -> None:
    failing = set(range(2, n_tasks, 8))  # 5 of 40 agents exit 3
    tasks = bench.create_tasks(
        [(f"Batch task {i}", bench.agent_command(i, exit_code=3 if i in failing else 0)) for i in range(n_tasks)]
    )
    ids = [t["id"] for t in tasks]
    failing_ids = {ids[i] for i in failing}
    assert len(set(ids)) == n_tasks
    assert {e["task"] for e in bench.matrix("--format", "json")["include"]} == set(ids)

    procs = [bench.popen("batch", "--parallel", "4", "--json") for _ in range(3)]
    results = [bench.finish(proc, timeout=240) for proc in procs]

    summaries = [summary_of(r) for r in results]
    for result, summary in zip(results, summaries, strict=True):
        assert summary["errors"] == [], result.stderr[-5000:]
        # 0 when each of its tasks' runs exited 0, 10 when one did not.
        failed_here = any(t["final_state"] != "exited" for t in summary["tasks"])
        assert result.exit_code == (10 if failed_here else 0), result.stderr[-5000:]
        assert summary["retried"] == 0
        assert summary["claimed"] == len(summary["tasks"]) == summary["runs"]

    # Every task run exactly once, by exactly one batch; none left queued.
    runs = bench.runs_by_task()
    assert sorted(runs) == sorted(ids)
    assert {task: len(found) for task, found in runs.items() if len(found) != 1} == {}
    all_runs = [found[0] for found in runs.values()]
    assert {r["state"] for r in all_runs} <= TERMINAL
    assert bench.matrix("--format", "json") == {"include": []}
    with bench.store() as store:
        assert [t.id for t in store.list_tasks() if t.queued or t.lease_owner] == []

    # The summaries add up to the coordinator's own counts.
    by_state: Counter[str] = Counter()
    for summary in summaries:
        by_state.update(summary["by_state"])
    assert (
        by_state == Counter(r["state"] for r in all_runs) == {"exited": n_tasks - len(failing), "failed": len(failing)}
    )
    reported = outcomes(summaries)
    assert sorted(reported) == sorted(ids)
    for task_id, outcome in reported.items():
        (run,) = runs[task_id]
        assert outcome["runs"] == [run["id"]]
        assert outcome["skipped"] is None
        assert (outcome["final_state"], outcome["exit_code"]) == (run["state"], run["exit_code"])

    # Agents that exited 3 are recorded as failed with exit 3, and were not retried.
    for task_id in ids:
        (run,) = runs[task_id]
        expected = ("failed", 3) if task_id in failing_ids else ("exited", 0)
        assert (run["state"], run["exit_code"]) == expected, run
        assert run["attempt"] == 1

    # Each run's commit is on its own branch; nothing else is left behind.
    problems = {r["id"]: r["details"]["errors"] for r in all_runs if r["details"].get("errors")}
    assert problems == {}, "runs recorded problems while they were settled"
    index_of = {task_id: i for i, task_id in enumerate(ids)}
    assert sorted(bench.branches()) == sorted(r["branch"] for r in all_runs)
    for task_id, (run,) in runs.items():
        i = index_of[task_id]
        assert bench.show(run["branch"], f"task-{i}.txt") == f"task {i} by {run['id']}\n"
    assert bench.worktrees() == [str(bench.repo)]
    assert bench.containers() == []


# -- a batch that dies ---------------------------------------------------------------------------


def test_a_killed_batch_is_taken_over_and_its_runs_settled_as_lost(bench: Bench) -> None:
    tasks = bench.create_tasks([(f"Slow task {i}", bench.agent_command(i, sleep=3)) for i in range(4)])
    ids = [t["id"] for t in tasks]

    doomed = bench.popen("batch", "--parallel", "2", "--lease", "3", "--poll", "0.2", "--json")

    def running_run_of_doomed() -> list[Any]:
        with bench.store() as store:
            return [r for r in store.list_runs() if r.owner and r.owner.pid == doomed.pid and r.state == "running"]

    bench.wait_for(running_run_of_doomed, timeout=90, what="the first batch to have a running run")
    os.kill(doomed.pid, signal.SIGKILL)
    killed = bench.finish(doomed, timeout=30)
    assert killed.exit_code == -signal.SIGKILL
    assert killed.stdout == ""  # it died before printing a summary
    with bench.store() as store:  # what the dead batch held and ran, frozen now
        held = {t.id for t in store.list_tasks() if t.lease_owner and f":{doomed.pid}:" in t.lease_owner}
        doomed_runs = {r.id: r for r in store.list_runs() if r.owner and r.owner.pid == doomed.pid}
    assert held

    survivor = bench.finish(bench.popen("batch", "--parallel", "2", "--lease", "3", "--poll", "0.2", "--json"), 240)
    summary = summary_of(survivor)
    assert survivor.exit_code == 0, survivor.stderr[-5000:]
    assert summary["errors"] == []

    # The dead batch's live runs were settled as lost by the batch that took their tasks over.
    runs = bench.runs_by_task()
    lost = {r["id"]: r for found in runs.values() for r in found if r["state"] == "lost"}
    live_at_kill = {run_id for run_id, r in doomed_runs.items() if r.state in ("created", "preparing", "running")}
    assert set(lost) == live_at_kill
    assert {r["task_id"] for r in lost.values()} <= held
    settled = {e["run_id"] for e in events_of(survivor) if e["kind"] == "settled"}
    assert settled == set(lost)
    for run in lost.values():
        assert run["exit_code"] is None
        assert run["owner"]["pid"] == doomed.pid

    # Every task finished exactly once (not lost), and nothing ran again after it finished.
    assert sorted(runs) == sorted(ids)
    for task_id in ids:
        found = sorted(runs[task_id], key=lambda r: r["attempt"])
        finished = [r for r in found if r["state"] in FINISHED]
        assert [(r["state"], r["exit_code"]) for r in finished] == [("exited", 0)], found
        assert found[-1] is finished[0], f"{task_id} ran again after it finished: {found}"
        assert all(r["state"] == "lost" for r in found[:-1]), found
        assert finished[0]["details"].get("errors") is None, finished[0]["details"]["errors"]
        i = ids.index(task_id)
        assert bench.show(finished[0]["branch"], f"task-{i}.txt") == f"task {i} by {finished[0]['id']}\n"
    reruns = outcomes([summary])
    for task_id in held:
        assert task_id in reruns, f"{task_id} (held by the dead batch) was not taken over"
        assert reruns[task_id]["final_state"] == "exited"
    assert bench.matrix("--format", "json") == {"include": []}

    # Nothing of the dead batch is left running; gc finds nothing beyond the dead batch's own leftovers.
    for container in bench.containers():
        assert container.labels.get("launcher.run-id") in doomed_runs, container.labels
    dead = tuple(doomed_runs)
    report = bench.ok("gc", "--json").json()
    for action in report["actions"]:
        assert action["error"] is None, action
        if action["kind"] == "remove-egress-proxy":
            continue  # the root's shared proxy: idle once every run has ended
        assert any(run_id in action["target"] for run_id in dead), f"gc found more than the dead batch left: {action}"
    assert bench.ok("gc", "--json").json()["actions"] == []
    assert bench.containers() == []
    assert bench.worktrees() == [str(bench.repo)]


def test_a_finished_run_whose_claim_was_never_released_is_not_run_again(bench: Bench) -> None:
    stale = bench.create_task("Finished but never released", bench.agent_command(0))["id"]
    other = bench.create_task("Still to do", bench.agent_command(1))["id"]

    # A batch claimed it, ran it to the end, and died before releasing the claim.
    with bench.store() as store:
        claimed = store.claim_next("crashed-batch:4242:1:0", 3.0)
        assert claimed is not None
        assert claimed.id == stale
    bench.ok("run", stale, "--concurrent")
    with bench.store() as store:
        task = store.get_task(stale)
        assert task.queued
        assert task.lease_owner == "crashed-batch:4242:1:0"
    (finished,) = bench.runs_by_task()[stale]
    assert (finished["state"], finished["exit_code"]) == ("exited", 0)

    def lease_expired() -> bool:
        with bench.store() as store:
            expires = store.get_task(stale).lease_expires
        return expires is not None and expires < time.time()

    bench.wait_for(lease_expired, timeout=30, what="the dead claim's lease to expire")

    result = bench.cli("batch", "--json", "--poll", "0.2", "--label", "source=batch", "-l", "nightly")
    summary = summary_of(result)
    assert result.exit_code == 0, result.stderr[-5000:]
    assert summary["errors"] == []
    reported = outcomes([summary])
    # Every run the batch made carries its labels; the run made before it carries none.
    (labelled,) = bench.runs_by_task()[other]
    assert labelled["labels"] == {"source": "batch", "nightly": ""}
    assert finished["labels"] == {}
    assert reported[stale]["runs"] == []
    assert reported[stale]["skipped"] is not None
    assert finished["id"] in reported[stale]["skipped"]
    assert (reported[stale]["final_state"], reported[stale]["exit_code"]) == ("exited", 0)
    assert reported[other]["skipped"] is None
    assert len(reported[other]["runs"]) == 1
    assert summary["runs"] == 1
    assert any(e["kind"] == "skipped" and e["task_id"] == stale for e in events_of(result))

    runs = bench.runs_by_task()
    assert [r["id"] for r in runs[stale]] == [finished["id"]]
    assert [r["state"] for r in runs[other]] == ["exited"]
    assert bench.matrix("--format", "json") == {"include": []}


# -- infrastructure failures are retried, agent failures are not --------------------------------


def test_injected_container_create_failures_are_retried(bench: Bench) -> None:
    # One worker, so the first task meets both injected failures, deterministically.
    first = bench.create_task("Flaky engine 0", bench.agent_command(0))["id"]
    second = bench.create_task("Flaky engine 1", bench.agent_command(1))["id"]

    result = bench.cli(
        "batch", "--parallel", "1", "--json", "--poll", "0.2", env={"LAUNCHER_TEST_FAULTS": "sandbox.create=2"}
    )
    summary = summary_of(result)
    assert result.exit_code == 0, result.stderr[-5000:]
    assert summary["errors"] == []

    runs = bench.runs_by_task()
    found = sorted(runs[first], key=lambda r: r["attempt"])
    # Each failed attempt failed on the engine before any agent ran, and is marked as such. With no
    # agent container there is nothing to harvest: no harvest container may be asked for (it would
    # meet the same failing engine, and use up a failure meant for a retry).
    for attempt in found[:-1]:
        assert (attempt["state"], attempt["exit_code"], attempt["container_id"]) == ("failed", None, None)
        assert attempt["details"]["infrastructure_failure"] is True
        assert attempt["details"]["errors"] == ["injected fault at sandbox.create: 500 Server Error"], (
            "a run whose container was never created still tried a harvest container"
        )
    assert [(r["state"], r["exit_code"]) for r in found] == [("failed", None), ("failed", None), ("exited", 0)]
    assert summary["retried"] == 2
    assert sum(e["kind"] == "retry" for e in events_of(result)) == 2
    assert [(r["state"], r["exit_code"]) for r in runs[second]] == [("exited", 0)]

    reported = outcomes([summary])
    assert reported[first]["runs"] == [r["id"] for r in found]
    assert (reported[first]["final_state"], reported[second]["final_state"]) == ("exited", "exited")
    assert summary["runs"] == 4
    assert summary["by_state"] == {"exited": 2}
    assert bench.show(found[-1]["branch"], "task-0.txt") == f"task 0 by {found[-1]['id']}\n"
    assert bench.worktrees() == [str(bench.repo)]


def test_git_lock_contention_is_absorbed_by_git_retries_and_agent_failures_are_not_retried(bench: Bench) -> None:
    good = bench.create_task("Commits fine", bench.agent_command(0))["id"]
    bad = bench.create_task("Agent fails", bench.agent_command(1, exit_code=7))["id"]

    result = bench.cli(
        "batch", "--parallel", "1", "--json", "--poll", "0.2", env={"LAUNCHER_TEST_FAULTS": "git.worktree=2"}
    )
    summary = summary_of(result)
    assert result.exit_code == 10, result.stderr[-5000:]  # one agent failed
    assert summary["errors"] == []
    assert summary["retried"] == 0
    assert summary["runs"] == 2
    assert summary["by_state"] == {"exited": 1, "failed": 1}

    runs = bench.runs_by_task()
    (good_run,) = runs[good]
    (bad_run,) = runs[bad]
    assert (good_run["state"], good_run["exit_code"]) == ("exited", 0)
    assert (bad_run["state"], bad_run["exit_code"]) == ("failed", 7)
    assert good_run["details"]["infrastructure_failure"] is False
    assert bad_run["details"]["infrastructure_failure"] is False
    assert bench.show(good_run["branch"], "task-0.txt") == f"task 0 by {good_run['id']}\n"
    assert bench.worktrees() == [str(bench.repo)]


# -- coordinator trouble (PostgreSQL) -------------------------------------------------------------


@pytest.mark.parametrize("state_backend", ["postgres"], indirect=True)
def test_a_batch_survives_its_coordinator_connection_being_reset(bench: Bench) -> None:
    """A dropped connection (the db container restarted, a failover) fails one transaction, not the batch."""
    import psycopg

    watcher = bench.popen("batch", "--watch", "--parallel", "2", "--poll", "0.2", "--json")
    dbname = bench.state_url.rsplit("/", 1)[1]

    def backends() -> list[int]:
        with psycopg.connect(bench.state_url, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'launcher'", (dbname,)
            ).fetchall()
        return [row[0] for row in rows]

    # The batch's own connection, one per worker and one for the lease heartbeat.
    bench.wait_for(lambda: len(backends()) >= 4, timeout=60, what="the watching batch to connect")
    with psycopg.connect(bench.state_url, autocommit=True) as conn:
        for pid in backends():
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))

    task = bench.create_task("Queued after the reset", bench.agent_command(0))["id"]

    def task_done() -> bool:
        if watcher.poll() is not None:
            ended = bench.finish(watcher, timeout=30)
            pytest.fail(f"the watching batch ended (exit {ended.exit_code}) after the reset:\n{ended.stderr[-3000:]}")
        return [r["state"] for r in bench.runs_by_task().get(task, [])] == ["exited"]

    try:
        bench.wait_for(task_done, timeout=120, what=f"the watching batch to run {task}", interval=0.5)
    finally:
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGINT)
        ended = bench.finish(watcher, timeout=60)
    assert ended.exit_code == 130, ended.stderr[-5000:]  # interrupted while watching: launcher's exit for Ctrl-C


@pytest.mark.parametrize("state_backend", ["postgres"], indirect=True)
def test_batch_on_a_sql_ascii_database(bench: Bench, pg_server: Any) -> None:
    """images/postgres initialises its cluster without an encoding: in a locale-less container that is SQL_ASCII."""
    import psycopg

    name = f"t_sqlascii_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(pg_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} ENCODING 'SQL_ASCII' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0")
    try:
        bench.state_url = pg_server.url(name)
        task = bench.create_task("On a SQL_ASCII coordinator", bench.agent_command(0))["id"]

        result = bench.cli("batch", "--json", "--poll", "0.2")

        summary = summary_of(result)
        assert (result.exit_code, summary["errors"], summary["claimed"]) == (0, [], 1), result.stderr[-5000:]
        assert [(r["state"], r["exit_code"]) for r in bench.runs_by_task()[task]] == [("exited", 0)]
    finally:
        with psycopg.connect(pg_server.url(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


# -- parallel runs on one repository ------------------------------------------------------------


def _holds_open(pid: int, folder: Path) -> bool:
    """Whether process ``pid`` has a file under ``folder`` open (launcher opens a lock file to wait for it)."""
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return False
    for fd in fds:
        try:
            if Path(os.readlink(fd)).is_relative_to(folder):
                return True
        except OSError:
            continue
    return False


def test_a_harvest_is_not_broken_by_another_runs_worktree_being_added(bench: Bench) -> None:
    """Parallel runs share the repository: while one run's `git worktree add` is under way (under the
    repository's lock), that worktree's HEAD is the null OID, and a connectivity check over every ref
    and worktree HEAD (`git bundle verify`, `git fetch` from a bundle) fails. A run harvesting at that
    moment must wait for the lock, not lose its commits."""
    from launcher.adapters.git import Repository

    agent = (
        'echo "harvested by $CASE_RUN_ID" > harvest.txt && git add harvest.txt && git commit -q -m harvest '
        "&& while [ ! -e /workspace/.go ]; do sleep 0.05; done"
    )
    task = bench.create_task("Harvest during another run's worktree add", ["sh", "-c", agent])["id"]
    batch = bench.popen("batch", "--json", "--poll", "0.2")

    def running() -> Any:
        with bench.store() as store:
            return next((r for r in store.list_runs(task_id=task) if r.state == "running"), None)

    run = bench.wait_for(running, timeout=90, what="the run to start")
    repo = Repository.open(bench.repo, lock_dir=bench.root / ".launcher" / "locks")
    admin = bench.repo / ".git" / "worktrees" / "another-run"
    with repo.locked():
        # What `git worktree add` has written by the time it runs `update-ref HEAD` (see git's add_worktree).
        admin.mkdir(parents=True)
        (admin / "locked").write_text("initializing\n")
        (admin / "gitdir").write_text(f"{bench.root}/.launcher/worktrees/another-run/.git\n")
        (admin / "commondir").write_text("../..\n")
        (admin / "HEAD").write_text("0" * 40 + "\n")
        (Path(run.worktree) / ".go").touch()  # the agent exits, the batch harvests
        bench.wait_for(
            lambda: _holds_open(batch.pid, bench.root / ".launcher" / "locks" / "repos"),
            timeout=60,
            what="the batch to wait for the repository's lock",
            interval=0.02,
        )
        shutil.rmtree(admin)  # `git worktree add` done (here: given up), the lock is released

    result = bench.finish(batch, timeout=120)
    summary = summary_of(result)
    (record,) = bench.runs_by_task()[task]
    assert record["details"].get("errors") is None, record["details"]["errors"]
    assert (record["state"], record["exit_code"]) == ("exited", 0)
    assert len(record["details"]["harvest"]["commits"]) == 1
    assert bench.show(record["branch"], "harvest.txt") == f"harvested by {record['id']}\n"
    assert (result.exit_code, summary["errors"]) == (0, [])

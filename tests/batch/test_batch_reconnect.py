"""`launcher batch` against a PostgreSQL coordinator that goes away mid-batch.

Real CLI processes, real Docker runs (``--network none``), real git, and a PostgreSQL server of
this module's own (the session's shared one must not be restarted under other tests): stopped
while runs are in progress, kept down past the lease, started again. Every step waits for a
condition (an event the batch printed, the server's state), never for a fixed time.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from pg import PgServer, Restartable, private_server

if TYPE_CHECKING:
    from conftest import Bench

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LEASE = "2"
# A batch rides out the outage: the store's calls, and its workers, wait this long for the server.
ENV = {"LAUNCHER_RECONNECT_SECONDS": "60"}
DEADLINE_S = 90.0


@pytest.fixture(scope="module")
def pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """This module's own server, in place of the session's (bench's PostgreSQL backend asks for it)."""
    with private_server(request.config, "launcher-pg-batch-") as server:
        yield server


@pytest.fixture
def db(pg_server: PgServer) -> Iterator[Restartable]:
    restartable = Restartable(pg_server)
    yield restartable
    if not restartable.up():
        restartable.start()


class Watched:
    """A `launcher batch --json` whose events are read as they come."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def events(self) -> list[dict[str, Any]]:
        with self._cond:
            lines = list(self.lines)
        return [json.loads(line)["event"] for line in lines if line.startswith('{"event"')]

    def wait(self, condition: Callable[[list[dict[str, Any]]], bool], what: str, timeout: float = DEADLINE_S) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                events = [json.loads(line)["event"] for line in self.lines if line.startswith('{"event"')]
                if condition(events):
                    return
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(self.lines[-40:])
                    pytest.fail(f"waiting for {what}: {'timed out' if left <= 0 else 'the batch ended'}\n{tail}")
                self._cond.wait(min(left, 0.5))

    def finish(self, timeout: float = DEADLINE_S) -> tuple[int, dict[str, Any]]:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            pytest.fail("the batch did not end:\n" + "\n".join(self.lines[-60:]))
        self._reader.join(30)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        try:
            return code, dict(json.loads(out))
        except json.JSONDecodeError:
            pytest.fail(f"no JSON summary (exit {code}):\n{out}\n" + "\n".join(self.lines[-60:]))


def kinds(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["kind"] == kind]


def assert_each_task_ran_once(bench: Bench, ids: list[str]) -> None:
    runs = bench.runs_by_task()
    assert sorted(runs) == sorted(ids)
    for task_id in ids:
        assert [(r["state"], r["exit_code"]) for r in runs[task_id]] == [("exited", 0)], runs[task_id]
        i = ids.index(task_id)
        (run,) = runs[task_id]
        assert bench.show(run["branch"], f"task-{i}.txt") == f"task {i} by {run['id']}\n"
    assert bench.matrix("--format", "json") == {"include": []}
    assert bench.containers() == []


@pytest.mark.parametrize("state_backend", ["postgres"], indirect=True)
def test_a_coordinator_restarted_mid_batch_is_ridden_out_and_every_task_runs_once(
    bench: Bench, db: Restartable
) -> None:
    n = 6
    ids = [t["id"] for t in bench.create_tasks([(f"Task {i}", bench.agent_command(i, sleep=2)) for i in range(n)])]
    batch = Watched(
        bench.popen(
            "batch", "--parallel", "2", "--lease", LEASE, "--poll", "0.2", "--network", "none", "--json", env=ENV
        )
    )
    batch.wait(lambda ev: len(kinds(ev, "started")) >= 2, "two runs in progress")

    db.stop()
    stopped = time.monotonic()
    batch.wait(lambda ev: bool(kinds(ev, "coordinator-lost")), "the batch to say it cannot renew its leases")
    db.start()
    restarted = time.monotonic()
    batch.wait(lambda ev: bool(kinds(ev, "coordinator-back")), "the batch to say the coordinator is back")
    back = time.monotonic()
    code, summary = batch.finish()

    events = batch.events()
    assert code == 0, "\n".join(batch.lines[-60:])
    assert summary["errors"] == []
    (lost,) = kinds(events, "coordinator-lost")
    (back_event,) = kinds(events, "coordinator-back")
    assert lost["detail"].startswith("paused: cannot renew leases with postgresql://")
    assert lost["since"]
    assert lost["at"] <= back_event["at"]
    assert kinds(events, "lease-lost") == []
    assert summary["by_state"] == {"exited": n}
    assert_each_task_ran_once(bench, ids)
    print(
        f"server down {restarted - stopped:.1f}s; batch back {back - restarted:.1f}s after the server; "
        f"{len(kinds(events, 'claimed'))} claims for {n} tasks"
    )


@pytest.mark.parametrize("state_backend", ["postgres"], indirect=True)
def test_a_worker_that_cannot_renew_claims_nothing_until_the_coordinator_is_back(bench: Bench, db: Restartable) -> None:
    n = 3
    ids = [t["id"] for t in bench.create_tasks([(f"Task {i}", bench.agent_command(i, sleep=3)) for i in range(n)])]
    batch = Watched(
        bench.popen(
            "batch", "--parallel", "1", "--lease", LEASE, "--poll", "0.2", "--network", "none", "--json", env=ENV
        )
    )

    def running() -> bool:
        with bench.store() as store:
            return any(r.state == "running" for r in store.list_runs())

    bench.wait_for(running, timeout=DEADLINE_S, what="the first run's agent to start")
    db.stop()
    batch.wait(lambda ev: bool(kinds(ev, "coordinator-lost")), "the pause")
    # Down until the first run's agent has exited (longer than its lease): the worker is done
    # with it but for the coordinator, and nothing may be claimed meanwhile.
    bench.wait_for(
        lambda: (found := bench.containers()) and all(c.status == "exited" for c in found),
        timeout=DEADLINE_S,
        what="the first run's container to exit",
        interval=0.2,
    )
    assert not kinds(batch.events(), "coordinator-back")
    claims_while_down = len(kinds(batch.events(), "claimed"))
    db.start()
    batch.wait(lambda ev: bool(kinds(ev, "coordinator-back")), "the batch to resume")
    code, summary = batch.finish()

    events = batch.events()
    assert code == 0, "\n".join(batch.lines[-60:])
    assert summary["errors"] == []
    order = [e["kind"] for e in events if e["kind"] in ("claimed", "coordinator-lost", "coordinator-back")]
    lost_at, back_at = order.index("coordinator-lost"), order.index("coordinator-back")
    assert "claimed" not in order[lost_at:back_at], f"claimed while paused: {order}"
    assert claims_while_down == order[:lost_at].count("claimed")
    assert order[back_at:].count("claimed") == n - claims_while_down, "claiming resumed after the pause"
    assert_each_task_ran_once(bench, ids)

"""`launcher run`'s claim under contention: N processes claim one task at once, on SQLite and PostgreSQL.

Each race starts N fresh interpreters running this file as a worker (``python THIS MODE …``);
each opens its own coordinator, waits at the start gate (start_gate.py) and calls
``claim_task`` on the same task. Exactly one may win: two winners are a task run twice by two
CI jobs. Then the winner's lease runs out (as a SIGKILLed launcher's would) and N more race to
take it over: again exactly one, and the claim's fencing token moves on by one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from start_gate import closed_gate, wait_at_gate

WORKERS = 12
BARRIER_TIMEOUT_S = 60.0
RACE_DEADLINE_S = 90.0


# -- the worker side -----------------------------------------------------------------------


def _worker(barrier: Path, index: int, args: dict[str, Any]) -> dict[str, Any]:
    from launcher.adapters.store import open_coordinator
    from launcher.errors import TaskClaimedError

    with open_coordinator(args["url"]) as store:
        wait_at_gate(barrier, index, BARRIER_TIMEOUT_S)
        owner = f"{args['prefix']}-{index}"
        try:
            task = store.claim_task(args["task"], owner, args["lease"])
        except TaskClaimedError as exc:
            return {"won": False, "message": exc.message}
        return {"won": True, "owner": owner, "lease_owner": task.lease_owner, "claims": task.claims}


if __name__ == "__main__":
    _barrier, _index, _args = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    print(json.dumps(_worker(_barrier, _index, _args)), flush=True)
    sys.exit(0)


# -- the test side -------------------------------------------------------------------------

import pytest  # noqa: E402
from pg import PgServer, pg_server  # noqa: E402

from launcher.adapters.store import open_coordinator, sqlite_url  # noqa: E402
from launcher.models import NewTask  # noqa: E402

__all__ = ["pg_server"]

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgres"])
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "state.db")
        return
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as url:
        yield url


def race(workdir: Path, args: dict[str, Any], workers: int = WORKERS) -> list[dict[str, Any]]:
    """``workers`` processes claim at once; their reports in order."""
    barrier = workdir / "barrier"
    barrier.mkdir(parents=True)
    with closed_gate(barrier) as open_gate:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LAUNCHER_", "GIT_"))}
        procs: list[subprocess.Popen[bytes]] = []
        logs = []
        deadline = time.monotonic() + RACE_DEADLINE_S
        try:
            for index in range(workers):
                out, err = workdir / f"{index}.out", workdir / f"{index}.err"
                logs.append((out, err))
                with out.open("wb") as stdout, err.open("wb") as stderr:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, __file__, str(barrier), str(index), json.dumps(args)],
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
                try:
                    proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
                except subprocess.TimeoutExpired:
                    raise AssertionError(f"the claim race overran its {RACE_DEADLINE_S:.0f}s deadline") from None
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


def test_n_processes_claim_one_task_exactly_one_wins_then_one_takes_the_expired_claim_over(
    state_url: str, tmp_path: Path
) -> None:
    with open_coordinator(state_url) as store:
        task = store.create_task(NewTask(prefix="demo", slug="once", title="t", repo="demo", doc={"title": "t"}))

    first = race(tmp_path / "first", {"url": state_url, "task": task.id, "prefix": "job", "lease": 2.0})
    winners = [r for r in first if r["won"]]
    assert len(winners) == 1, f"{len(winners)} processes won one task's claim: {first}"
    assert winners[0]["lease_owner"] == winners[0]["owner"]
    assert winners[0]["claims"] == 1
    losers = [r for r in first if not r["won"]]
    assert len(losers) == WORKERS - 1
    assert all(winners[0]["owner"] in r["message"] for r in losers), "a refusal names who holds the claim"
    with open_coordinator(state_url) as store:
        held = store.get_task(task.id)
        assert held.lease_owner == winners[0]["owner"]
        # The winner stops renewing (a launcher SIGKILLed): its lease runs out on the coordinator's clock.
        assert held.lease_expires is not None
        while time.time() <= held.lease_expires + 0.05:
            time.sleep(0.05)

    second = race(tmp_path / "second", {"url": state_url, "task": task.id, "prefix": "next", "lease": 60.0})
    winners = [r for r in second if r["won"]]
    assert len(winners) == 1, f"{len(winners)} processes took one expired claim over: {second}"
    assert winners[0]["claims"] == 2, "taking a claim over moves its fencing token on"
    with open_coordinator(state_url) as store:
        assert store.get_task(task.id).lease_owner == winners[0]["owner"]
        # The holder claiming again only extends its lease; the token stays.
        again = store.claim_task(task.id, winners[0]["owner"], 60.0)
        assert (again.lease_owner, again.claims) == (winners[0]["owner"], 2)

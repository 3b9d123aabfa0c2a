"""Host port leases under contention: processes of two case roots lease at once.

Each root's coordinator never hands one port to two runs (its primary key, under its write
lock); across roots, which have coordinators of their own, the host decides: a port another
root's run holds (bound, as the engine's publishing binds it) is skipped, never shared.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import wait_for
from start_gate import closed_gate

from launcher.adapters.store.sqlite import SqliteCoordinator

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("port_lease_worker.py")
LOW, HIGH = 29300, 29699


def race(tmp_path: Path, roots: dict[str, Path], per_root: int, count: int, *, hold: bool) -> list[list[object]]:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    with closed_gate(barrier) as open_gate:
        for db in roots.values():
            SqliteCoordinator(db).close()
        procs: list[subprocess.Popen[bytes]] = []
        try:
            index = 0
            for name, db in roots.items():
                for _ in range(per_root):
                    args = {"db": str(db), "root": name, "count": count, "low": LOW, "high": HIGH, "hold": hold}
                    procs.append(
                        subprocess.Popen([sys.executable, str(WORKER), str(barrier), str(index), json.dumps(args)])
                    )
                    index += 1
            wait_for(lambda: len(list(barrier.glob("ready-*"))) == len(procs), timeout=120, what="every worker ready")
            open_gate()
            wait_for(
                lambda: len(list(barrier.glob("leased-*"))) == len(procs) or any(p.poll() for p in procs),
                timeout=120,
                what="every worker's leases",
            )
            assert [p.poll() for p in procs] == [None] * len(procs), "a worker died while leasing"
            leased = [pair for i in range(len(procs)) for pair in json.loads((barrier / f"out-{i}.json").read_text())]
            held = {}
            for name, db in roots.items():
                with SqliteCoordinator(db) as store:
                    held[name] = store.port_leases()
            (barrier / "release").touch()
            deadline = time.monotonic() + 120
            for proc in procs:
                assert proc.wait(timeout=max(1.0, deadline - time.monotonic())) == 0
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for name, leases in held.items():
            mine = {port: run_id for run_id, port in leased if str(run_id).startswith(f"{name}-")}
            assert {port: run_id for port, (run_id, _n) in leases.items()} == mine
        for db in roots.values():
            with SqliteCoordinator(db) as store:
                assert store.port_leases() == {}
        return leased


def test_two_roots_leasing_at_once_never_hold_one_port_twice(tmp_path: Path) -> None:
    roots = {"a": tmp_path / "a.db", "b": tmp_path / "b.db"}
    leased = race(tmp_path, roots, per_root=6, count=10, hold=True)
    ports = [port for _run, port in leased]
    assert len(ports) == 2 * 6 * 10
    assert len(set(ports)) == len(ports), "two runs held one host port"


def test_one_root_s_coordinator_alone_never_leases_a_port_twice(tmp_path: Path) -> None:
    leased = race(tmp_path, {"a": tmp_path / "a.db"}, per_root=12, count=10, hold=False)
    ports = [port for _run, port in leased]
    assert len(ports) == 120
    assert len(set(ports)) == 120
    assert max(ports) == LOW + 119, "the range is used from its bottom, without gaps"

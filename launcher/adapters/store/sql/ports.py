"""Host port leases: allocated in one transaction, never held twice (the primary key)."""

from __future__ import annotations

from collections.abc import Iterable

from launcher.adapters.store.sql.dialect import Cursor, Dialect
from launcher.core.portleases import lowest_free_port
from launcher.core.ports.coordinator import PortStore


class SqlPortStore(PortStore):
    _d: Dialect

    def lease_port(self, run_id: str, name: str, low: int, high: int, skip: Iterable[int] = ()) -> int:
        d = self._d
        skipped = list(skip)

        def body(cur: Cursor) -> int:
            # The subnets' serialising point: both are small pools handed out the same way, and a
            # new point would need a new advisory key in every backend.
            d.serialise(cur, "subnet")
            cur.execute("DELETE FROM port_leases WHERE run_id = ? AND name = ?", (run_id, name))
            rows = cur.execute("SELECT port FROM port_leases WHERE port BETWEEN ? AND ?", (low, high)).fetchall()
            port = lowest_free_port((int(r["port"]) for r in rows), low, high, skipped)
            insert = f"INSERT INTO port_leases (port, run_id, name, leased_at) VALUES (?, ?, ?, {d.clock})"  # noqa: S608
            cur.execute(insert, (port, run_id, name))
            return port

        return d.write(body)

    def release_ports(self, run_id: str) -> int:
        def body(cur: Cursor) -> int:
            return int(cur.execute("DELETE FROM port_leases WHERE run_id = ?", (run_id,)).rowcount)

        return self._d.write(body)

    def port_leases(self) -> dict[int, tuple[str, str]]:
        def body(cur: Cursor) -> dict[int, tuple[str, str]]:
            rows = cur.execute("SELECT port, run_id, name FROM port_leases").fetchall()
            return {int(r["port"]): (str(r["run_id"]), str(r["name"])) for r in rows}

        return self._d.read(body)

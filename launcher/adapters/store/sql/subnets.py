"""Run-network subnet slots: allocated in one transaction, never held twice (the primary key)."""

from __future__ import annotations

from collections.abc import Iterable

from launcher.adapters.store.sql.dialect import Cursor, Dialect
from launcher.core.ports import SubnetStore
from launcher.core.subnets import lowest_free_slot


class SqlSubnetStore(SubnetStore):
    _d: Dialect

    def lease_subnet(self, run_id: str, slots: int, skip: Iterable[int] = ()) -> int:
        d = self._d
        skipped = list(skip)

        def body(cur: Cursor) -> int:
            d.serialise(cur, "subnet")
            cur.execute("DELETE FROM subnet_leases WHERE run_id = ?", (run_id,))
            taken = [int(r["slot"]) for r in cur.execute("SELECT slot FROM subnet_leases").fetchall()]
            slot = lowest_free_slot(taken, slots, skipped)
            insert = f"INSERT INTO subnet_leases (slot, run_id, leased_at) VALUES (?, ?, {d.clock})"  # noqa: S608
            cur.execute(insert, (slot, run_id))
            return slot

        return d.write(body)

    def release_subnet(self, run_id: str) -> bool:
        def body(cur: Cursor) -> bool:
            return cur.execute("DELETE FROM subnet_leases WHERE run_id = ?", (run_id,)).rowcount == 1

        return self._d.write(body)

    def transfer_subnet(self, holder: str, new_holder: str) -> bool:
        def body(cur: Cursor) -> bool:
            sql = "UPDATE subnet_leases SET run_id = ? WHERE run_id = ?"
            return cur.execute(sql, (new_holder, holder)).rowcount == 1

        return self._d.write(body)

    def subnet_leases(self) -> dict[int, str]:
        def body(cur: Cursor) -> dict[int, str]:
            rows = cur.execute("SELECT slot, run_id FROM subnet_leases").fetchall()
            return {int(r["slot"]): str(r["run_id"]) for r in rows}

        return self._d.read(body)

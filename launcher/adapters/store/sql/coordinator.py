"""The coordinator over any SQL dialect: the four capabilities, the schema, the connection's life.

Every mutation is one transaction, every state change a compare-and-set (the rules are in
``launcher.core.coordination``). Where a backend runs writers side by side (PostgreSQL at READ
COMMITTED), a transaction locks exactly what it depends on: the prefix's counter row for a
number, the task's or run's row (``Dialect.for_update``) before checking it, a serialising point
for the global run number, the subnet slots and host ports, and the migration. Where writers are serialised
(SQLite's ``BEGIN IMMEDIATE``) those locks are no-ops.

Every timestamp the coordinator stamps and every lease expiry comes from the dialect's clock:
the server's for a shared database, so machines sharing it agree whatever their own clocks say.
Timestamps a caller passes in (a run's ``started_at``/``ended_at``) are stored as given.
"""

from __future__ import annotations

from functools import partial

from launcher.adapters.store.sql.dialect import Dialect
from launcher.adapters.store.sql.ports import SqlPortStore
from launcher.adapters.store.sql.queue import SqlQueueStore
from launcher.adapters.store.sql.runs import SqlRunStore
from launcher.adapters.store.sql.schema import migrate
from launcher.adapters.store.sql.subnets import SqlSubnetStore
from launcher.adapters.store.sql.tasks import SqlTaskStore
from launcher.core.ports import Coordinator


class SqlCoordinator(SqlTaskStore, SqlQueueStore, SqlRunStore, SqlSubnetStore, SqlPortStore, Coordinator):
    def __init__(self, dialect: Dialect) -> None:
        self._d = dialect
        dialect.open(partial(migrate, dialect))

    def close(self) -> None:
        self._d.close()

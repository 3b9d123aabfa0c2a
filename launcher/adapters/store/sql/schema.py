"""The schema and its migrations, once for every backend; only column types differ (``ColumnTypes``).

Each entry upgrades the schema by one version; never edit a released entry, append. Version N
holds the same tables, columns and indexes in every backend.
"""

from __future__ import annotations

from functools import cache

from launcher.adapters.store.sql.dialect import ColumnTypes, Cursor, Dialect
from launcher.errors import StateStoreError

_MIGRATIONS: list[list[str]] = [
    [
        """CREATE TABLE id_counters (
            prefix TEXT PRIMARY KEY,
            last_number {integer} NOT NULL
        )""",
        """CREATE TABLE tasks (
            id TEXT PRIMARY KEY,
            prefix TEXT NOT NULL,
            number {integer} NOT NULL,
            slug TEXT NOT NULL,
            title TEXT NOT NULL,
            repo TEXT NOT NULL,
            repo_path TEXT,
            base_ref TEXT NOT NULL,
            image TEXT,
            command TEXT NOT NULL,
            status TEXT NOT NULL,
            queued {flag},
            version {integer} NOT NULL,
            doc TEXT NOT NULL,
            created_at {timestamp} NOT NULL,
            updated_at {timestamp} NOT NULL,
            UNIQUE (prefix, number)
        )""",
        "CREATE INDEX tasks_status ON tasks (status)",
        """CREATE TABLE transitions (
            seq {serial},
            task_id TEXT NOT NULL REFERENCES tasks (id),
            from_status TEXT,
            to_status TEXT NOT NULL,
            reason TEXT,
            actor TEXT NOT NULL,
            at {timestamp} NOT NULL
        )""",
        "CREATE INDEX transitions_task ON transitions (task_id, seq)",
        """CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            seq {integer} NOT NULL UNIQUE,
            task_id TEXT NOT NULL REFERENCES tasks (id),
            attempt {integer} NOT NULL,
            state TEXT NOT NULL,
            owner TEXT,
            branch TEXT NOT NULL,
            worktree TEXT NOT NULL,
            image TEXT,
            container_id TEXT,
            exit_code {integer},
            uid {integer},
            cancel_requested {flag},
            created_at {timestamp} NOT NULL,
            updated_at {timestamp} NOT NULL,
            started_at {timestamp},
            ended_at {timestamp},
            details TEXT NOT NULL,
            UNIQUE (task_id, attempt)
        )""",
        "CREATE INDEX runs_state ON runs (state)",
        """CREATE TABLE run_events (
            seq {serial},
            run_id TEXT NOT NULL REFERENCES runs (id),
            from_state TEXT,
            to_state TEXT NOT NULL,
            at {timestamp} NOT NULL,
            detail TEXT
        )""",
    ],
    [
        # v2: task files launcher adopted from a case harness keep their own path, and every
        # file's last known content hash tells a hand edit from launcher's own writes.
        "ALTER TABLE tasks ADD COLUMN file_path TEXT",
        "ALTER TABLE tasks ADD COLUMN file_sha256 TEXT",
        "ALTER TABLE tasks ADD COLUMN origin TEXT NOT NULL DEFAULT 'launcher'",
    ],
    [
        # v3: the queue. A claim is a lease (owner + expiry on the coordinator's clock, unix
        # seconds), renewed while the run lives; an expired lease may be claimed again by another
        # batch.
        "ALTER TABLE tasks ADD COLUMN queued_at {timestamp}",
        "ALTER TABLE tasks ADD COLUMN lease_owner TEXT",
        "ALTER TABLE tasks ADD COLUMN lease_expires {real}",
        "ALTER TABLE tasks ADD COLUMN claims {integer} NOT NULL DEFAULT 0",
        "UPDATE tasks SET queued_at = created_at WHERE queued = TRUE",
        "CREATE INDEX tasks_queue ON tasks (queued, queued_at)",
    ],
    [
        # v4: run-network subnet slots; the primary key makes a slot impossible to hold twice.
        """CREATE TABLE subnet_leases (
            slot INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL UNIQUE,
            leased_at {timestamp} NOT NULL{stamp_default}
        )""",
    ],
    [
        # v5: a run's events are read by run. PostgreSQL stores made before v5 have this index
        # from their v1 already; SQLite stores never had it.
        "CREATE INDEX IF NOT EXISTS run_events_run ON run_events (run_id, seq)",
    ],
    [
        # v6: a task names its repository portably: the remote URL (credentials stripped) that
        # another machine clones it from; repo_path stays, as the creator's hint.
        "ALTER TABLE tasks ADD COLUMN repo_url TEXT",
    ],
    [
        # v7: host ports leased to runs (--port, [run.ports]); the primary key makes a port
        # impossible to hold twice, the unique pair one port per name per run.
        """CREATE TABLE port_leases (
            port INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            name TEXT NOT NULL,
            leased_at {timestamp} NOT NULL{stamp_default},
            UNIQUE (run_id, name)
        )""",
    ],
]
SCHEMA_VERSION = len(_MIGRATIONS)


@cache
def migrations(types: ColumnTypes) -> list[list[str]]:
    """The migrations with one backend's column types filled in."""
    names = {
        "integer": types.integer,
        "flag": types.flag,
        "timestamp": types.timestamp,
        "real": types.real,
        "serial": types.serial,
        "stamp_default": types.stamp_default,
    }
    return [[statement.format(**names) for statement in step] for step in _MIGRATIONS]


def migrate(dialect: Dialect, cur: Cursor) -> None:
    """Bring the schema up to ``SCHEMA_VERSION``; refuse a store from a newer launcher."""
    dialect.serialise(cur, "migration")
    if not dialect.has_table(cur, "schema_version"):
        cur.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
    row = cur.execute("SELECT version FROM schema_version").fetchone()
    current = int(row["version"]) if row else 0
    if current > SCHEMA_VERSION:
        raise StateStoreError(
            f"the state store {dialect.where} has schema version {current}, newer than this "
            f"launcher understands ({SCHEMA_VERSION})",
            hint="upgrade launcher",
        )
    for statements in migrations(dialect.types)[current:]:
        for statement in statements:
            cur.execute(statement)
    if row is None:
        cur.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    elif current != SCHEMA_VERSION:
        cur.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))

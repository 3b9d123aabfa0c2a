"""Runs: attempt and global number allocated in one transaction, state changes as compare-and-set."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from launcher.adapters.store.rows import event_from_row, run_from_row
from launcher.adapters.store.sql.dialect import Cursor, Dialect, one
from launcher.adapters.store.sql.tasks import task_row
from launcher.core.coordination import (
    check_fence,
    check_run_fields,
    check_run_state,
    merge_details,
    run_branch,
    run_id,
)
from launcher.core.ports import RunStore
from launcher.core.transitions import RunState
from launcher.errors import NotFoundError
from launcher.models import NewRun, RunEventRecord, RunRecord

_INSERT_RUN = """INSERT INTO runs (id, seq, task_id, attempt, state, owner, branch, worktree, image,
    created_at, updated_at, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"""
_INSERT_EVENT = "INSERT INTO run_events (run_id, from_state, to_state, at, detail) VALUES (?, ?, ?, ?, ?)"


def _row(dialect: Dialect, cur: Cursor, run: str, *, lock: bool = False) -> Any:
    sql = "SELECT * FROM runs WHERE id = ?" + (dialect.for_update if lock else "")  # noqa: S608
    row = cur.execute(sql, (run,)).fetchone()
    if row is None:
        raise NotFoundError(f"no run {run!r}", hint="`launcher ps --all` shows the known runs")
    return row


class SqlRunStore(RunStore):
    _d: Dialect

    def create_run(self, new: NewRun) -> RunRecord:
        d = self._d

        def body(cur: Cursor) -> RunRecord:
            # The task's row lock orders the attempts of one task; the run-seq point the global
            # run numbers (gap-free, so a rolled-back run never burns a number).
            task = task_row(d, cur, new.task_id, lock=True)
            sql = "SELECT COALESCE(MAX(attempt), 0) + 1 AS attempt FROM runs WHERE task_id = ?"
            attempt = int(one(cur.execute(sql, (task.id,)))["attempt"])
            d.serialise(cur, "run-seq")
            seq = int(one(cur.execute("SELECT COALESCE(MAX(seq), 0) + 1 AS seq FROM runs"))["seq"])
            now = d.stamp(d.now(cur))
            new_id = run_id(task.prefix, task.number, attempt)
            cur.execute(
                _INSERT_RUN,
                (
                    new_id,
                    seq,
                    task.id,
                    attempt,
                    RunState.CREATED.value,
                    new.owner.model_dump_json() if new.owner else None,
                    run_branch(task.id, attempt),
                    str(Path(new.worktrees_dir) / new_id),
                    new.image,
                    now,
                    now,
                    json.dumps(new.details),
                ),
            )
            cur.execute(_INSERT_EVENT, (new_id, None, RunState.CREATED.value, now, None))
            return run_from_row(_row(d, cur, new_id))

        return d.write(body)

    def get_run(self, run_id: str) -> RunRecord:
        return self._d.read(lambda cur: run_from_row(_row(self._d, cur, run_id)))

    def list_runs(self, *, states: Iterable[RunState] | None = None, task_id: str | None = None) -> list[RunRecord]:
        sql, params = "SELECT * FROM runs WHERE TRUE", []
        if states is not None:
            wanted = [s.value for s in states]
            sql += f" AND state IN ({', '.join('?' * len(wanted))})" if wanted else " AND FALSE"
            params.extend(wanted)
        if task_id is not None:
            sql += " AND task_id = ?"
            params.append(task_id)

        def body(cur: Cursor) -> list[RunRecord]:
            return [run_from_row(r) for r in cur.execute(sql + " ORDER BY seq", params).fetchall()]

        return self._d.read(body)

    def update_run(
        self,
        run_id: str,
        *,
        expected: Iterable[RunState] | None = None,
        state: RunState | None = None,
        detail: str | None = None,
        fence: int | None = None,
        **changes: Any,
    ) -> RunRecord:
        d = self._d
        check_run_fields(changes)
        allowed = set(expected) if expected is not None else None

        def body(cur: Cursor) -> RunRecord:
            row = _row(d, cur, run_id, lock=True)
            if fence is not None:
                # The task's row lock: no claim can be taken over until this run's state is written.
                task = task_row(d, cur, row["task_id"], lock=True)
                check_fence(f"run {run_id}", task.id, fence, task.claims, task.lease_owner)
            current = RunState(row["state"])
            check_run_state(run_id, current, allowed)
            now = d.stamp(d.now(cur))
            columns: dict[str, Any] = {"updated_at": now}
            for key, value in changes.items():
                columns[key] = _encode(d, key, value, row)
            if state is not None:
                columns["state"] = state.value
            # Column names come from RUN_FIELDS only (checked above), never from the caller.
            assignments = ", ".join(f"{k} = ?" for k in columns)
            cur.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*columns.values(), run_id))  # noqa: S608
            if state is not None and state != current:
                cur.execute(_INSERT_EVENT, (run_id, current.value, state.value, now, detail))
            return run_from_row(_row(d, cur, run_id))

        return d.write(body)

    def run_events(self, run_id: str) -> list[RunEventRecord]:
        def body(cur: Cursor) -> list[RunEventRecord]:
            rows = cur.execute("SELECT * FROM run_events WHERE run_id = ? ORDER BY seq", (run_id,)).fetchall()
            return [event_from_row(r) for r in rows]

        return self._d.read(body)


def _encode(dialect: Dialect, key: str, value: Any, row: Any) -> Any:
    if key == "details":
        # Merged with the stored JSON as it is, not with a parsed record: keys this launcher
        # does not know survive.
        return json.dumps(merge_details(json.loads(row["details"]), value))
    if key == "owner":
        return value.model_dump_json() if value is not None else None
    if key in {"started_at", "ended_at"}:
        return dialect.stamp(value) if value is not None else None
    if key == "cancel_requested":
        return bool(value)
    return value

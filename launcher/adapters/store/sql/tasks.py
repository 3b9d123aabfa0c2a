"""Tasks: numbers allocated in the writing transaction, status and document as compare-and-set."""

from __future__ import annotations

import json
from typing import Any

from launcher.adapters.store.rows import task_from_row, transition_from_row
from launcher.adapters.store.sql.dialect import Cursor, Dialect, one
from launcher.core.case_layout import era_of_file
from launcher.core.coordination import (
    adopted_status,
    check_adoption,
    check_doc_update,
    check_fence,
    check_task_version,
    check_transition,
    make_task_id,
    new_task_doc,
    parse_short_ref,
    transitioned_doc,
)
from launcher.core.ports import TaskStore
from launcher.core.transitions import TaskStatus
from launcher.errors import NotFoundError
from launcher.models import AdoptedTask, NewTask, TaskRecord, TransitionRecord

# One statement takes the prefix's counter row and the next number: it serialises the
# allocators of one prefix (PostgreSQL's row lock; SQLite's writer lock serialises all anyway).
_NEXT_NUMBER = (
    "INSERT INTO id_counters (prefix, last_number) VALUES (?, 1) "
    "ON CONFLICT (prefix) DO UPDATE SET last_number = id_counters.last_number + 1 "
    "RETURNING last_number"
)
_INSERT_TASK = """INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, repo_url, base_ref, image,
    command, status, queued, version, doc, created_at, updated_at, queued_at)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?)"""
_INSERT_ADOPTED = """INSERT INTO tasks (id, prefix, number, slug, title, repo, repo_path, repo_url, base_ref, image,
    command, status, queued, version, doc, created_at, updated_at, file_path, file_sha256, origin)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, '[]', ?, FALSE, 1, ?, ?, ?, ?, ?, 'adopted')"""
_INSERT_TRANSITION = (
    "INSERT INTO transitions (task_id, from_status, to_status, reason, actor, at) "
    "VALUES (?, ?, ?, ?, ?, ?) RETURNING seq"
)
_NO_TASK_HINT = "`launcher task list` shows the known tasks"


def task_row(dialect: Dialect, cur: Cursor, task_id: str, *, lock: bool = False) -> TaskRecord:
    """The task, row-locked with ``lock`` where the backend locks rows; NotFoundError if absent."""
    sql = "SELECT * FROM tasks WHERE id = ?" + (dialect.for_update if lock else "")  # noqa: S608
    row = cur.execute(sql, (task_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"no task {task_id!r}", hint=_NO_TASK_HINT)
    return task_from_row(row)


def record_transition(
    cur: Cursor, task_id: str, source: str | None, target: str, reason: str | None, actor: str, at: Any
) -> int:
    return int(one(cur.execute(_INSERT_TRANSITION, (task_id, source, target, reason, actor, at)))["seq"])


def reserve(dialect: Dialect, cur: Cursor, prefix: str, number: int) -> None:
    cur.execute(
        "INSERT INTO id_counters (prefix, last_number) VALUES (?, ?) ON CONFLICT (prefix) DO UPDATE "  # noqa: S608
        f"SET last_number = {dialect.greatest}(id_counters.last_number, excluded.last_number)",
        (prefix, number),
    )


class SqlTaskStore(TaskStore):
    _d: Dialect

    def create_task(self, new: NewTask) -> TaskRecord:
        d = self._d

        def body(cur: Cursor) -> TaskRecord:
            number = int(one(cur.execute(_NEXT_NUMBER, (new.prefix,)))["last_number"])
            task_id = make_task_id(new.prefix, number, new.slug)
            doc, status = new_task_doc(task_id, new.doc)
            now = d.stamp(d.now(cur))
            cur.execute(
                _INSERT_TASK,
                (
                    task_id,
                    new.prefix,
                    number,
                    new.slug,
                    new.title,
                    new.repo,
                    new.repo_path,
                    new.repo_url,
                    new.base_ref,
                    new.image,
                    json.dumps(new.command),
                    status.value,
                    new.queued,
                    json.dumps(doc),
                    now,
                    now,
                    now if new.queued else None,
                ),
            )
            record_transition(cur, task_id, None, status.value, "created", "launcher", now)
            return task_row(d, cur, task_id)

        return d.write(body)

    def get_task(self, task_id: str) -> TaskRecord:
        return self._d.read(lambda cur: task_row(self._d, cur, task_id))

    def resolve_task(self, ref: str) -> TaskRecord:
        def body(cur: Cursor) -> TaskRecord:
            row = cur.execute("SELECT * FROM tasks WHERE id = ?", (ref,)).fetchone()
            if row is None and (short := parse_short_ref(ref)) is not None:
                row = cur.execute("SELECT * FROM tasks WHERE prefix = ? AND number = ?", short).fetchone()
            if row is None:
                raise NotFoundError(f"no task {ref!r}", hint=_NO_TASK_HINT)
            return task_from_row(row)

        return self._d.read(body)

    def list_tasks(self, status: TaskStatus | None = None) -> list[TaskRecord]:
        order = f" ORDER BY prefix{self._d.collate}, number"

        def body(cur: Cursor) -> list[TaskRecord]:
            if status is None:
                rows = cur.execute("SELECT * FROM tasks" + order).fetchall()  # noqa: S608
            else:
                select = "SELECT * FROM tasks WHERE status = ?" + order  # noqa: S608
                rows = cur.execute(select, (status.value,)).fetchall()
            return [task_from_row(r) for r in rows]

        return self._d.read(body)

    def transition(
        self,
        task_id: str,
        expected: TaskStatus,
        target: TaskStatus,
        *,
        reason: str | None,
        actor: str,
        fence: int | None = None,
    ) -> tuple[TaskRecord, TransitionRecord]:
        d = self._d

        def body(cur: Cursor) -> tuple[TaskRecord, TransitionRecord]:
            current = task_row(d, cur, task_id, lock=True)
            check_fence(actor, task_id, fence, current.claims, current.lease_owner)
            check_transition(task_id, current.status, expected, target, era_of_file(current.file_path))
            moment = d.now(cur)
            now = d.stamp(moment)
            cur.execute(
                "UPDATE tasks SET status = ?, doc = ?, version = version + 1, updated_at = ? WHERE id = ?",
                (target.value, json.dumps(transitioned_doc(current.doc, target)), now, task_id),
            )
            seq = record_transition(cur, task_id, expected.value, target.value, reason, actor, now)
            record = TransitionRecord(
                seq=seq, task_id=task_id, from_status=expected, to_status=target, reason=reason, actor=actor, at=moment
            )
            return task_row(d, cur, task_id), record

        return d.write(body)

    def adopt_task(self, task: AdoptedTask) -> TaskRecord:
        d = self._d

        def body(cur: Cursor) -> TaskRecord:
            # Reserving first takes the prefix's counter row: adopters and creators of one prefix
            # queue up here, so the checks below see every task committed before this one. A
            # refused adoption rolls the reservation back with everything else.
            reserve(d, cur, task.prefix, task.number)
            known = cur.execute("SELECT id FROM tasks WHERE id = ?", (task.id,)).fetchone() is not None
            clash = cur.execute(
                "SELECT id FROM tasks WHERE prefix = ? AND number = ?", (task.prefix, task.number)
            ).fetchone()
            check_adoption(task.id, task.file_path, task.number, known=known, holder=clash["id"] if clash else None)
            status = adopted_status(task.doc)
            now = d.stamp(d.now(cur))
            cur.execute(
                _INSERT_ADOPTED,
                (
                    task.id,
                    task.prefix,
                    task.number,
                    task.slug,
                    task.title,
                    task.repo,
                    task.repo_path,
                    task.repo_url,
                    task.base_ref,
                    status.value,
                    json.dumps(task.doc),
                    now,
                    now,
                    task.file_path,
                    task.file_sha256,
                ),
            )
            record_transition(cur, task.id, None, status.value, f"adopted from {task.file_path}", "launcher", now)
            return task_row(d, cur, task.id)

        return d.write(body)

    def reserve_numbers(self, prefix: str, number: int) -> None:
        self._d.write(lambda cur: reserve(self._d, cur, prefix, number))

    def task_file_paths(self) -> set[str]:
        def body(cur: Cursor) -> set[str]:
            rows = cur.execute("SELECT file_path FROM tasks WHERE file_path IS NOT NULL").fetchall()
            return {str(r["file_path"]) for r in rows}

        return self._d.read(body)

    def record_file(self, task_id: str, path: str, sha256: str) -> None:
        def body(cur: Cursor) -> None:
            cur.execute("UPDATE tasks SET file_path = ?, file_sha256 = ? WHERE id = ?", (path, sha256, task_id))

        self._d.write(body)

    def import_external_change(self, task_id: str, doc: dict[str, Any], sha256: str) -> TaskRecord:
        d = self._d

        def body(cur: Cursor) -> TaskRecord:
            current = task_row(d, cur, task_id, lock=True)
            status = TaskStatus(doc["status"])
            now = d.stamp(d.now(cur))
            cur.execute(
                "UPDATE tasks SET doc = ?, status = ?, file_sha256 = ?, version = version + 1, updated_at = ? "
                "WHERE id = ?",
                (json.dumps(doc), status.value, sha256, now, task_id),
            )
            if status != current.status:
                reason = "task file changed outside launcher"
                record_transition(cur, task_id, current.status.value, status.value, reason, "external", now)
            return task_row(d, cur, task_id)

        return d.write(body)

    def update_task_doc(
        self, task_id: str, expected_version: int, doc: dict[str, Any], *, actor: str, fence: int | None = None
    ) -> TaskRecord:
        d = self._d

        def body(cur: Cursor) -> TaskRecord:
            current = task_row(d, cur, task_id, lock=True)
            check_fence(actor, task_id, fence, current.claims, current.lease_owner)
            check_task_version(task_id, current.version, expected_version)
            check_doc_update(task_id, current.status, doc)
            cur.execute(
                "UPDATE tasks SET doc = ?, version = version + 1, updated_at = ? WHERE id = ?",
                (json.dumps(doc), d.stamp(d.now(cur)), task_id),
            )
            return task_row(d, cur, task_id)

        return d.write(body)

    def history(self, task_id: str) -> list[TransitionRecord]:
        def body(cur: Cursor) -> list[TransitionRecord]:
            task_row(self._d, cur, task_id)
            rows = cur.execute("SELECT * FROM transitions WHERE task_id = ? ORDER BY seq", (task_id,)).fetchall()
            return [transition_from_row(r) for r in rows]

        return self._d.read(body)

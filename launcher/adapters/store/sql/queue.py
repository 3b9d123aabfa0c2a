"""The batch queue: a claim is a lease (owner + expiry in unix seconds on the coordinator's clock).

``claims`` counts the claims taken over from someone else: the fencing token of the newest claim
(launcher.core.ports.coordinator.QueueStore).
"""

from __future__ import annotations

from collections.abc import Iterable

from launcher.adapters.store.sql.dialect import Cursor, Dialect
from launcher.adapters.store.sql.tasks import task_row
from launcher.core.ports import QueueStore
from launcher.errors import TaskClaimedError
from launcher.models import TaskRecord


class SqlQueueStore(QueueStore):
    _d: Dialect

    def enqueue(self, task_ids: Iterable[str]) -> list[TaskRecord]:
        d = self._d
        wanted = list(task_ids)

        def body(cur: Cursor) -> list[TaskRecord]:
            now = d.stamp(d.now(cur))
            queued = []
            for task_id in wanted:
                task_row(d, cur, task_id, lock=True)
                cur.execute(
                    "UPDATE tasks SET queued = TRUE, queued_at = ?, lease_owner = NULL, lease_expires = NULL, "
                    "updated_at = ? WHERE id = ?",
                    (now, now, task_id),
                )
                queued.append(task_row(d, cur, task_id))
            return queued

        return d.write(body)

    def claim_next(self, owner: str, lease_seconds: float) -> TaskRecord | None:
        d = self._d
        # Claimable: queued, and the lease free or expired. Ties in queued_at (one enqueue call
        # stamps all its tasks alike) go by prefix in byte order, then number.
        claimable = (
            "SELECT id FROM tasks "  # noqa: S608
            f"WHERE queued = TRUE AND (lease_owner IS NULL OR lease_expires < {d.epoch}) "
            f"ORDER BY queued_at NULLS FIRST, prefix{d.collate}, number LIMIT 1"
        )

        def body(cur: Cursor) -> TaskRecord | None:
            # Where rows are locked, other claimers' rows are skipped rather than waited for
            # (SKIP LOCKED)... but "nothing claimable" must not be said of a task that is only
            # locked for a moment (a transition, a renewal, a release that keeps it queued):
            # the next lock waits for those locks and looks again, as SQLite's serialised
            # writers would.
            for lock in d.claim_locks:
                row = cur.execute(claimable + lock).fetchone()
                if row is not None:
                    break
            else:
                return None
            cur.execute(
                "UPDATE tasks SET lease_owner = ?, claims = claims + 1, "  # noqa: S608
                f"lease_expires = {d.epoch} + ? WHERE id = ?",
                (owner, float(lease_seconds), row["id"]),
            )
            return task_row(d, cur, row["id"])

        return d.write(body)

    def claim_task(self, task_id: str, owner: str, lease_seconds: float) -> TaskRecord:
        d = self._d

        def body(cur: Cursor) -> tuple[bool, TaskRecord]:
            # The row lock (PostgreSQL) or the writer lock (SQLite) makes look-then-take one step:
            # of two claimers, the second sees the first's lease.
            task_row(d, cur, task_id, lock=True)
            taken = cur.execute(
                "UPDATE tasks SET "  # noqa: S608
                # Taking the claim over from someone else is a new claim (the fencing token
                # moves on); the holder claiming again only extends its lease.
                "claims = claims + CASE WHEN lease_owner = ? THEN 0 ELSE 1 END, "
                f"lease_owner = ?, lease_expires = {d.epoch} + ? "
                f"WHERE id = ? AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires < {d.epoch})",
                (owner, owner, float(lease_seconds), task_id, owner),
            )
            return taken.rowcount == 1, task_row(d, cur, task_id)

        claimed, task = d.write(body)
        if not claimed:
            raise TaskClaimedError(
                f"task {task_id} is claimed by {task.lease_owner}",
                hint="another job runs it; --concurrent starts a second attempt anyway",
            )
        return task

    def renew_lease(self, task_id: str, owner: str, lease_seconds: float) -> bool:
        d = self._d

        def body(cur: Cursor) -> bool:
            result = cur.execute(
                f"UPDATE tasks SET lease_expires = {d.epoch} + ? WHERE id = ? AND lease_owner = ?",  # noqa: S608
                (float(lease_seconds), task_id, owner),
            )
            return result.rowcount == 1

        return d.write(body)

    def release_claim(self, task_id: str, owner: str, *, done: bool, fence: int | None = None) -> bool:
        d = self._d
        # By owner, and by token when given: a claim someone took over is theirs, even if it is
        # later taken under the same owner name again.
        fenced = "" if fence is None else " AND claims = ?"
        params = (done, task_id, owner) if fence is None else (done, task_id, owner, fence)

        def body(cur: Cursor) -> bool:
            result = cur.execute(
                "UPDATE tasks SET lease_owner = NULL, lease_expires = NULL, "  # noqa: S608
                f"queued = CASE WHEN ? THEN FALSE ELSE queued END, updated_at = {d.clock} "
                f"WHERE id = ? AND lease_owner = ?{fenced}",
                params,
            )
            return result.rowcount == 1

        return d.write(body)

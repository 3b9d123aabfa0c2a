"""What `launcher matrix` plans: one CI job per task still to do, so a re-plan loses nothing and
repeats nothing.

The rule, from what the coordinator already records (no column of its own):
- a task is a candidate when it is queued (the default), or in the task status asked for;
- it is left out while a live claim holds it (a job is running it now; its lease has not run
  out): a second job would only be refused (exit 17);
- it is left out once it is done: a run of it ended ``exited`` (the agent exited 0 and its
  work is on its branch) after it was last queued (ever, for a task that was never queued).
  Such a run also takes its task off the queue when it settles, so a queued task that is
  listed is one whose runs so far failed, timed out, were cancelled, lost, unharvested or superseded, or
  that never ran: it stays schedulable until a run of it succeeds;
- `launcher queue TASK` puts a done task back: runs before that no longer count.
"""

from __future__ import annotations

from collections.abc import Iterable

from launcher.core.ports import Coordinator
from launcher.core.transitions import RunState, parse_status
from launcher.models import RunRecord, TaskRecord

QUEUED = "queued"


def plan_matrix(store: Coordinator, status: str, now: float) -> list[TaskRecord]:
    """The tasks to give a CI job each, in the coordinator's order; ``now`` is unix time, as
    lease expiries are kept."""
    if status == QUEUED:
        candidates = [t for t in store.list_tasks() if t.queued]
    else:
        candidates = store.list_tasks(parse_status(status))
    runs: dict[str, list[RunRecord]] = {}
    for run in store.list_runs():
        runs.setdefault(run.task_id, []).append(run)
    return [t for t in candidates if not claimed(t, now) and done_by(t, runs.get(t.id, [])) is None]


def claimed(task: TaskRecord, now: float) -> bool:
    """A live claim holds the task: a job (or a batch worker) is running it."""
    return task.lease_owner is not None and task.lease_expires is not None and task.lease_expires > now


def done_by(task: TaskRecord, runs: Iterable[RunRecord]) -> RunRecord | None:
    """The run that did the task since it was last queued, if one did."""
    since = task.queued_at
    succeeded = [r for r in runs if r.state is RunState.EXITED and (since is None or r.created_at >= since)]
    return succeeded[-1] if succeeded else None

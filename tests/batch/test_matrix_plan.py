"""`launcher matrix` plans only what is still to do: a re-plan never repeats finished tasks.

End to end (real CLI processes, Docker, git): plan, run the jobs, plan again. Then the rule on
its own, on the real SQLite coordinator: a live claim hides a task, an expired one does not;
a success counts only since the task was last queued.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.core.matrix import plan_matrix
from launcher.core.transitions import RunState
from launcher.models import NewRun, NewTask

if TYPE_CHECKING:
    from conftest import Bench


def entries(matrix: dict[str, list[dict[str, str]]]) -> list[str]:
    return [entry["task"] for entry in matrix["include"]]


@pytest.mark.docker
@pytest.mark.slow
def test_a_replan_lists_only_tasks_not_finished(bench: Bench) -> None:
    done = bench.create_task("Succeeds", bench.agent_command(0))["id"]
    fails = bench.create_task("Fails", bench.agent_command(1, exit_code=3))["id"]
    waits = bench.create_task("Not run yet", bench.agent_command(2))["id"]

    first = entries(bench.matrix("--format", "json"))
    assert first == [done, fails, waits]
    jobs = {task: bench.popen("run", task) for task in (done, fails)}
    codes = {task: bench.finish(proc, timeout=180).exit_code for task, proc in jobs.items()}
    assert codes == {done: 0, fails: 10}

    # The finished task is off the queue; the failed one stays schedulable, as does the unrun one.
    assert entries(bench.matrix("--format", "json")) == [fails, waits]
    with bench.store() as store:
        assert store.get_task(done).queued is False
        assert store.get_task(fails).queued is True
    # Queued again, a finished task is planned again: runs before that no longer count.
    bench.ok("queue", done)
    assert entries(bench.matrix("--format", "json")) == [done, fails, waits]


def test_the_rule_live_claims_and_successes_since_queued(tmp_path: Path) -> None:
    with open_coordinator(sqlite_url(tmp_path / "state.db")) as store:
        ids = [
            store.create_task(
                NewTask(prefix="demo", slug=f"t{n}", title="t", repo="demo", queued=True, doc={"title": "t"})
            ).id
            for n in range(4)
        ]
        held, expired, succeeded, failed = ids
        store.claim_task(held, "job-a", 60)
        store.claim_task(expired, "job-b", 0.01)
        for task_id, state in ((succeeded, RunState.EXITED), (failed, RunState.FAILED)):
            run = store.create_run(NewRun(task_id=task_id, image=None, owner=None, worktrees_dir="/w"))
            store.update_run(run.id, state=state)
        now = time.time() + 1  # past job-b's lease, well within job-a's

        assert [t.id for t in plan_matrix(store, "queued", now)] == [expired, failed]
        # Another status than the queue: the same rule (a success ever, for a task never queued again).
        assert [t.id for t in plan_matrix(store, "active", now)] == [expired, failed]
        # Queued again, its success before no longer counts.
        store.enqueue([succeeded])
        assert [t.id for t in plan_matrix(store, "queued", now)] == [expired, succeeded, failed]

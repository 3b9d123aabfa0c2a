"""What the host carries back from a run of today's case's task: only while the run's claim is the
task's newest. A superseded run's files are kept with it and nothing of them reaches the main
checkout. (The same rules for live runs, real Docker: tests/harness/test_case_today_runs.py.)"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fakes import FakeWorld  # RunDeps over a real SQLite store

from launcher.adapters.case_state import CaseStateFiles
from launcher.core.run.case_scope import carry_back
from launcher.models import NewRun, RunOwner
from launcher.models.details import CaseScopeDetails, TaskChangeReport

EVENT = b'{"type": "pipeline_start", "sequence": 1}\n'


def _run_with_case_state(tmp_path: Path) -> tuple[FakeWorld, Path, str]:
    world = FakeWorld.make(tmp_path)
    world.deps.case_state = CaseStateFiles()
    task_id = world.new_task()
    main = tmp_path / "cli" / ".case"
    (main / "tasks" / "active").mkdir(parents=True)
    (main / "run-log.jsonl").write_bytes(b'{"runId": "old"}\n')
    run = world.store.create_run(
        NewRun(task_id=task_id, image=None, owner=RunOwner(host="test", pid=1), worktrees_dir=str(tmp_path / "wt"))
    )
    given = b'{"runId": "old"}\n'
    scope = CaseScopeDetails(
        case_dir=str(main),
        task_file=f"{task_id}.task.json",
        run_log_size=len(given),
        run_log_sha256=hashlib.sha256(given).hexdigest(),
    )
    world.store.update_run(run.id, details={"case_scope": scope.model_dump(mode="json")})
    paths = world.deps.paths(world.store.get_run(run.id))
    left = paths.worktree / ".case"
    (left / task_id / "events").mkdir(parents=True)
    (left / task_id / "events" / "run-abc.jsonl").write_bytes(EVENT)
    (left / task_id / "tested").write_text("timestamp: now\npass_indicators: 3\n")
    (left / "run-log.jsonl").write_bytes(b'{"runId": "old"}\n{"runId": "abc"}\n')
    paths.record.mkdir(parents=True, exist_ok=True)
    return world, main, run.id


def test_a_run_whose_claim_holds_carries_its_new_files_back(tmp_path: Path) -> None:
    world, main, run_id = _run_with_case_state(tmp_path)
    run = world.store.get_run(run_id)
    report = TaskChangeReport()

    carry_back(world.deps, run, world.deps.paths(run), report, fence=None)

    task_id = run.task_id
    assert (main / task_id / "events" / "run-abc.jsonl").read_bytes() == EVENT
    assert (main / task_id / "tested").read_text().startswith("timestamp: now")
    assert [json.loads(line)["runId"] for line in (main / "run-log.jsonl").read_text().splitlines()] == ["old", "abc"]
    assert sorted(report.carried_back) == sorted(
        [f"{task_id}/events/run-abc.jsonl", f"{task_id}/tested", "run-log.jsonl (+1 lines)"]
    )
    kept = world.deps.paths(run).record / ".case" / task_id / "events" / "run-abc.jsonl"
    assert kept.read_bytes() == EVENT
    world.close()


def test_a_superseded_run_keeps_its_files_and_carries_nothing_back(tmp_path: Path) -> None:
    world, main, run_id = _run_with_case_state(tmp_path)
    run = world.store.get_run(run_id)
    world.store.claim_task(run.task_id, "box-a:1:1:run", 60)
    world.store.release_claim(run.task_id, "box-a:1:1:run", done=False)
    world.store.claim_task(run.task_id, "box-b:2:2:run", 60)  # a newer attempt holds the task: claim #2
    report = TaskChangeReport()

    carry_back(world.deps, run, world.deps.paths(run), report, fence=1)

    assert not (main / run.task_id).exists()
    assert (main / "run-log.jsonl").read_bytes() == b'{"runId": "old"}\n'
    assert report.carried_back == []
    assert report.not_carried == ["all of it: this run is superseded (its files are kept with the run)"]
    kept = world.deps.paths(run).record / ".case"
    assert (kept / run.task_id / "events" / "run-abc.jsonl").read_bytes() == EVENT
    assert (kept / "run-log.jsonl").is_file()
    world.close()

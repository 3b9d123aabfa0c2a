"""`launcher matrix`: the queue as a CI job matrix, each entry run as a job of its own.

The matrix is consumed the way a GitHub Actions workflow does (``fromJSON`` of one output line),
and every entry is run as a separate `launcher run TASK` process, all at once.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Bench


def one_line_json(stdout: str) -> Any:
    lines = stdout.splitlines()
    assert len(lines) == 1, f"a GitHub matrix must be one line, got {len(lines)}:\n{stdout}"
    return json.loads(lines[0])


@pytest.mark.docker
def test_github_matrix_entries_run_as_separate_jobs(bench: Bench) -> None:
    queued = [bench.create_task(f"Matrix job {i}", bench.agent_command(i)) for i in range(3)]
    bench.create_task("Not queued", bench.agent_command(9), queue=False)

    result = bench.ok("matrix", "--format", "github")
    matrix = one_line_json(result.stdout)
    assert matrix == {"include": [{"task": t["id"], "slug": t["slug"]} for t in queued]}
    # `matrix` with no --format is the GitHub form too.
    assert bench.ok("matrix").stdout == result.stdout

    # Each entry is a job of its own: `launcher run <task>`, all of them at the same time.
    jobs = {entry["task"]: bench.popen("run", entry["task"]) for entry in matrix["include"]}
    finished = {task: bench.finish(proc, timeout=180) for task, proc in jobs.items()}
    for task, job in finished.items():
        assert job.exit_code == 0, f"launcher run {task} -> {job.exit_code}\n{job.stdout}\n{job.stderr}"

    runs = bench.runs_by_task()
    for i, task in enumerate(t["id"] for t in queued):
        (run,) = runs[task]
        assert (run["state"], run["exit_code"]) == ("exited", 0)
        assert run["branch"] == f"launcher/{task}/1"
        assert bench.show(run["branch"], f"task-{i}.txt") == f"task {i} by {run['id']}\n"
    assert sorted(bench.branches()) == sorted(f"launcher/{t['id']}/1" for t in queued)
    assert bench.worktrees() == [str(bench.repo)]


@pytest.mark.slow
def test_matrix_by_task_status(bench: Bench) -> None:
    first = bench.create_task("Active and queued", ["true"])
    second = bench.create_task("Active, not queued", ["true"], queue=False)
    moved = bench.create_task("Implementing", ["true"], queue=False)
    bench.ok("task", "set-status", moved["id"], "implementing")

    active = one_line_json(bench.ok("matrix", "--status", "active", "--format", "github").stdout)
    assert active == {"include": [{"task": t["id"], "slug": t["slug"]} for t in (first, second)]}
    implementing = one_line_json(bench.ok("matrix", "--status", "implementing").stdout)
    assert implementing == {"include": [{"task": moved["id"], "slug": moved["slug"]}]}
    assert bench.matrix("--status", "verifying", "--format", "json") == {"include": []}
    assert json.loads(bench.ok("matrix", "--status", "implementing", "--json").stdout) == implementing
    assert one_line_json(bench.ok("matrix").stdout) == {"include": [{"task": first["id"], "slug": first["slug"]}]}


@pytest.mark.slow
def test_matrix_refuses_an_unknown_format(bench: Bench) -> None:
    bench.create_task("Queued", ["true"])

    result = bench.cli("matrix", "--format", "yaml")

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "'yaml'" in result.stderr
    assert "github or json" in result.stderr

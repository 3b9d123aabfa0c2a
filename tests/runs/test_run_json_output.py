"""Real `--json` output of runs and tasks, checked against the JSON Schemas launcher ships."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from runkit import Case

from launcher.models.schemas import shipped

pytestmark = pytest.mark.docker

AGENT = (
    "echo hi > hi.txt && git add hi.txt && git commit -qm hi && "
    'printf "<<<AGENT_RESULT\\n{\\"status\\": \\"completed\\", \\"summary\\": \\"ok\\"}\\nAGENT_RESULT>>>\\n"'
)


def valid(name: str, document: object) -> None:
    validator = Draft202012Validator(shipped(name))
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]
    assert errors == [], f"{name}: {errors}"


def test_run_ps_and_task_output_match_the_shipped_schemas(case: Case, git_repo: Path) -> None:
    created = case.json("task", "create", "--repo", str(git_repo), "--title", "Schema check")
    valid("task.schema.json", created)

    result = case.cli("run", created["id"], "--network", "none", "--json", "--", "sh", "-c", AGENT)
    assert result.exit_code == 0, result.stderr
    run = json.loads(result.stdout)
    valid("run.schema.json", run)
    assert run["details"]["agent_result"]["state"] == "valid"
    assert len(run["details"]["harvest"]["commits"]) == 1

    valid("ps.schema.json", case.json("ps", "--all"))
    valid("task-list.schema.json", case.json("task", "list"))
    shown = case.json("task", "show", created["id"])
    valid("task-show.schema.json", shown)
    assert [r["id"] for r in shown["runs"]] == [run["id"]]

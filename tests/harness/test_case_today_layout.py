"""Pointing launcher at today's case (repo-local .case/, workos/case at 30b1fa1): found, adopted
byte for byte, new tasks where and as case keeps them, the era's transition table enforced.

No Docker: these drive `launcher init` / `task …` through the CLI only (runs: test_case_today_runs.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from runkit import Case
from today_kit import CREATED_ID, OLDER_ID, Today, build_today, schema_errors


@pytest.fixture
def today(tmp_path: Path) -> tuple[Today, Case]:
    layout = build_today(tmp_path)
    return layout, Case(layout.root)


def test_init_says_it_found_todays_layout_and_adopts_it_byte_for_byte(today: tuple[Today, Case]) -> None:
    layout, case = today
    before = layout.digests()

    init = case.json("init")

    assert init["projects_file"] == str(layout.data / "projects.json")
    assert init["case_layouts"] == [
        {
            "era": "repo-local",
            "where": [str(layout.case_dir / "tasks" / "active")],
            "task_files": 2,
            "repos": ["cli"],
        }
    ]
    assert sorted(init["adoption"]["adopted"]) == sorted([CREATED_ID, OLDER_ID])
    assert init["adoption"]["invalid"] == []
    assert layout.digests() == before, "adoption changed a file of the repository's .case/"
    listed = {t["id"]: t for t in case.json("task", "list")}
    assert listed[CREATED_ID]["status"] == "active"
    assert listed[OLDER_ID]["status"] == "pr-opened"
    assert listed[CREATED_ID]["repo"] == "cli"
    assert listed[CREATED_ID]["doc"] == json.loads(layout.task_file(CREATED_ID).read_text())

    text = case.ok("init").stdout
    assert "case layout: repo-local (case at 30b1fa1: <repo>/.case/tasks/), 2 task files in cli" in text
    assert f"projects:    {layout.data / 'projects.json'}" in text
    assert layout.digests() == before


def test_a_harness_beside_it_is_found_too_and_each_task_keeps_its_eras_table(today: tuple[Today, Case]) -> None:
    layout, case = today
    active = layout.root / "tasks" / "active"
    active.mkdir()
    older = json.loads(layout.task_file(OLDER_ID).read_text())
    harness_task = {**older, "id": "cli-7-under-the-root", "status": "verifying", "branch": "fix/root"}
    (active / "cli-7-under-the-root.task.json").write_text(json.dumps(harness_task, indent=2) + "\n")

    init = case.json("init")

    assert [found["era"] for found in init["case_layouts"]] == ["harness", "repo-local"]
    assert "cli-7-under-the-root" in init["adoption"]["adopted"]
    # verifying -> evaluating is a move of today's case only (src/commands/status.ts).
    refused = case.cli("task", "set-status", "cli-7-under-the-root", "evaluating", "--json")
    assert refused.exit_code == 4, refused.stdout + refused.stderr
    assert "illegal transition verifying -> evaluating" in refused.stdout + refused.stderr

    for step in ("implementing", "verifying", "evaluating", "reviewing", "evaluating", "closing"):
        moved = case.json("task", "set-status", CREATED_ID, step)
        assert moved["status"] == step
    doc = json.loads(layout.task_file(CREATED_ID).read_text())
    assert doc["status"] == "closing"
    assert schema_errors(doc) == []
    approving = case.cli("task", "set-status", CREATED_ID, "approving", "--json")
    assert approving.exit_code == 4
    assert "today's case" in approving.stdout + approving.stderr


def test_new_tasks_go_where_case_keeps_them_and_validate_against_its_schema(today: tuple[Today, Case]) -> None:
    layout, case = today
    case.ok("init")
    before = layout.digests()

    made = [case.json("task", "create", "--repo", "cli", "--title", f"Add flag {i}") for i in range(3)]

    ids = [task["id"] for task in made]
    # The older task of this repository took number 1; case's own IDs take no number at all.
    assert ids == ["cli-2-add-flag-0", "cli-3-add-flag-1", "cli-4-add-flag-2"]
    for task in made:
        path = Path(task["paths"]["json"])
        assert path == layout.task_file(task["id"])
        assert schema_errors(json.loads(path.read_text())) == []
        assert Path(task["paths"]["md"]).is_file()
    after = layout.digests()
    assert {k: v for k, v in after.items() if k in before} == before, "creating tasks changed other files"
    assert (layout.case_dir / "active").read_text() == f"{CREATED_ID}\n", ".case/active is case's own"
    assert len({*ids, CREATED_ID, OLDER_ID}) == 5


def test_layout_harness_keeps_new_tasks_under_the_root(today: tuple[Today, Case]) -> None:
    layout, case = today
    (layout.root / "launcher.toml").write_text(f'[case]\ndata_dir = "{layout.data}"\nlayout = "harness"\n')
    case.ok("init")

    made = case.json("task", "create", "--repo", "cli", "--title", "Under the root")

    assert Path(made["paths"]["json"]) == layout.root / "tasks" / "active" / f"{made['id']}.task.json"


def test_the_data_dir_comes_from_CASE_DATA_DIR_as_case_finds_it(today: tuple[Today, Case]) -> None:
    layout, case = today
    (layout.root / "launcher.toml").unlink()
    moved = layout.root.parent / "elsewhere"
    shutil.move(str(layout.data), moved)

    init = json.loads(case.ok("init", "--json", env={"CASE_DATA_DIR": str(moved)}).stdout)

    assert init["projects_file"] == str(moved / "projects.json")
    assert sorted(init["adoption"]["adopted"]) == sorted([CREATED_ID, OLDER_ID])


def test_a_status_not_of_todays_case_is_not_adopted(today: tuple[Today, Case]) -> None:
    layout, case = today
    path = layout.task_file(OLDER_ID)
    path.write_text(path.read_text().replace('"pr-opened"', '"approving"'))
    before = layout.digests()

    init = case.json("init")

    assert OLDER_ID not in init["adoption"]["adopted"]
    [problem] = init["adoption"]["invalid"]
    assert problem["path"] == str(path)
    assert "'approving'" in problem["error"]
    assert "repo-local" in problem["error"]
    assert layout.digests() == before

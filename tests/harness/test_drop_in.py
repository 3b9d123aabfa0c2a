"""Pointing launcher at an existing case harness: adopt, fix paths, run case's scripts unchanged."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
from harness_kit import HARDCODED_ROOT
from jsonschema import Draft202012Validator
from runkit import Case, wait_for

pytestmark = pytest.mark.docker

AGENT = r"""
set -eu
T="$CASE_ROOT/tasks/active/$(cat .case/active).task.json"
bash "$CASE_ROOT/scripts/task-status.sh" "$T" status implementing
bash "$CASE_ROOT/scripts/task-status.sh" "$T" agent implementer started now
echo "5 passed, 0 failed" | bash "$CASE_ROOT/scripts/mark-tested.sh"
bash "$CASE_ROOT/scripts/task-status.sh" "$T" prUrl "https://example.invalid/$CASE_TASK_ID"
echo "$CASE_TASK_ID" > mine.txt && git add mine.txt && git commit -qm "$CASE_TASK_ID"
git diff --quiet main -- README.md
"""
CHEAT_TESTED = r"""
T="$CASE_ROOT/tasks/active/$(cat .case/active).task.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['tested']=True; json.dump(d, open(sys.argv[1],'w'))" "$T"
"""
CHEAT_MERGED = r"""
T="$CASE_ROOT/tasks/active/$(cat .case/active).task.json"
python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d['status']='merged'
json.dump(d, open(sys.argv[1],'w'))" "$T"
"""


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def schema_errors(root: Path, path: Path) -> list[str]:
    schema = json.loads((root / "tasks" / "task.schema.json").read_text())
    return [e.message for e in Draft202012Validator(schema).iter_errors(json.loads(path.read_text()))]


def test_init_adopts_the_harness_without_changing_a_byte(harness: Case) -> None:
    files = sorted((harness.root / "tasks").rglob("*.task.json")) + sorted((harness.root / "tasks").rglob("*.md"))
    before = {p: digest(p) for p in files}

    init = harness.ok("init")

    assert "adopted:     widgets-1-issue-53" in init.stdout
    assert "adopted:     widgets-3-old-fix" in init.stdout
    assert {p: digest(p) for p in files} == before
    listed = {t["id"]: t for t in harness.json("task", "list")}
    assert {k: v["status"] for k, v in listed.items()} == {
        "widgets-1-issue-53": "verifying",
        "widgets-2-add-widget": "implementing",
        "widgets-3-old-fix": "merged",
    }
    assert listed["widgets-1-issue-53"]["doc"]["agents"]["implementer"]["status"] == "running"
    assert listed["widgets-1-issue-53"]["doc"]["profile"] == "standard"
    assert listed["widgets-1-issue-53"]["title"] == "Issue 53"

    created = harness.json("task", "create", "--repo", "widgets", "--title", "Next fix", "--template", "bug-fix")
    assert created["id"] == "widgets-4-next-fix"
    assert created["repo"] == "widgets"
    new_file = Path(created["paths"]["json"])
    assert schema_errors(harness.root, new_file) == []
    assert "## Objective" in Path(created["paths"]["md"]).read_text()
    assert {p: digest(p) for p in files} == before

    unknown = harness.cli("task", "create", "--repo", "nope", "--title", "x")
    assert unknown.exit_code == 5
    assert "known: widgets, gadgets" in unknown.stderr


def test_hand_edits_are_imported_never_overwritten(harness: Case) -> None:
    harness.ok("init")
    path = harness.root / "tasks" / "active" / "widgets-2-add-widget.task.json"
    doc = json.loads(path.read_text())
    doc["status"] = "verifying"
    doc["prUrl"] = "https://example.invalid/by-hand"
    path.write_text(json.dumps(doc))

    shown = harness.json("task", "show", "widgets-2")

    assert shown["status"] == "verifying"
    assert shown["doc"]["prUrl"] == "https://example.invalid/by-hand"
    assert shown["history"][-1]["actor"] == "external"
    moved = harness.json("task", "set-status", "widgets-2", "reviewing", "--from", "verifying")
    assert moved["status"] == "reviewing"
    assert json.loads(path.read_text())["prUrl"] == "https://example.invalid/by-hand"


def test_paths_fix_then_case_scripts_work_unchanged_inside_concurrent_runs(harness: Case) -> None:
    check = harness.cli("paths", "check")
    assert check.exit_code == 1
    assert HARDCODED_ROOT in check.stdout
    assert "scripts/task-status.sh" in check.stdout
    harness.ok("paths", "fix")
    assert harness.cli("paths", "check").exit_code == 0
    assert HARDCODED_ROOT not in (harness.root / "scripts" / "mark-tested.sh").read_text()
    harness.ok("init")

    tasks = [harness.create_task(Path("widgets"), f"Task {i}") for i in range(8)]
    cheat_tested = harness.create_task(Path("widgets"), "Cheats on evidence")
    cheat_merged = harness.create_task(Path("widgets"), "Skips the pipeline")
    procs = [harness.popen("run", task, "--", "bash", "-c", AGENT) for task in tasks]
    procs.append(harness.popen("run", cheat_tested, "--", "bash", "-c", CHEAT_TESTED))
    procs.append(harness.popen("run", cheat_merged, "--", "bash", "-c", CHEAT_MERGED))
    for proc in procs:
        proc.wait(timeout=600)
    assert [p.returncode for p in procs] == [0] * len(procs)

    listed = {t["id"]: t for t in harness.json("task", "list")}
    for task in tasks:
        doc = listed[task]["doc"]
        assert listed[task]["status"] == "implementing", task
        assert doc["tested"] is True
        assert doc["prUrl"] == f"https://example.invalid/{task}"
        assert doc["agents"]["implementer"]["started"]
        path = harness.root / "tasks" / "active" / f"{task}.task.json"
        assert json.loads(path.read_text()) == doc
        assert schema_errors(harness.root, path) == []
        md = (harness.root / "tasks" / "active" / f"{task}.md").read_text()
        assert "Status active → implementing: requested by run" in md
        run = harness.json("task", "show", task)["runs"][-1]
        assert run["details"]["task_changes"]["refused"] == []
        assert run["details"]["task_changes"]["markers"]["tested"]["pass_indicators"] == "1"
        branch = run["branch"]
        widgets = harness.root.parent / "widgets"
        log = subprocess.run(
            ["git", "-C", str(widgets), "log", "-1", "--format=%s", branch], capture_output=True, text=True, check=True
        )
        assert log.stdout.strip() == task

    tested = harness.json("task", "show", cheat_tested)
    assert tested["doc"]["tested"] is False
    refused = tested["runs"][-1]["details"]["task_changes"]["refused"]
    assert any("tested: set to true without" in r for r in refused), refused

    merged = harness.json("task", "show", cheat_merged)
    assert merged["status"] == "active"
    refused = merged["runs"][-1]["details"]["task_changes"]["refused"]
    assert any("illegal transition active -> merged" in r for r in refused), refused

    # The adopted tasks were not touched by any of it.
    assert listed["widgets-1-issue-53"]["status"] == "verifying"
    wait_for(lambda: not harness.containers(), timeout=30, what="no containers left")


def test_inside_a_run_projects_json_points_at_the_worktree_and_main_is_visible(harness: Case) -> None:
    harness.ok("init")
    task = harness.create_task(Path("widgets"), "Look around")
    probe = (
        "python3 -c \"import json; r=[e for e in json.load(open('/case/projects.json'))['repos'] "
        "if e['name']=='widgets'][0]; print('PATH', r['path'])\"; "
        "cd /case && cd \"$(python3 -c \"import json; print([e for e in json.load(open('projects.json'))['repos'] "
        "if e['name']=='widgets'][0]['path'])\")\" && pwd && git branch --list main"
    )
    result = harness.ok("run", task, "--", "sh", "-c", probe)
    assert "PATH ../workspace" in result.stdout
    assert "/workspace" in result.stdout
    assert "main" in result.stdout
    # The harness's own projects.json is untouched.
    assert json.loads((harness.root / "projects.json").read_text())["repos"][0]["path"] == "../widgets"

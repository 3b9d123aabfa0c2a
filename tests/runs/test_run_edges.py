"""Runs at the edges: a shallow clone, and a task file someone broke by hand.

Real Docker engine, real git, the real CLI in a separate process.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runkit import Case, facts, git, head_of, make_repo, repo_git, run_id_of, worktree_paths

pytestmark = pytest.mark.docker

SHALLOW_AGENT = r"""
set -u
echo "FACT shallow=$(git rev-parse --is-shallow-repository)"
if git log --format=%s >/tmp/log 2>&1; then echo "FACT log=$(tr '\n' ';' </tmp/log)"
else echo "FACT log=failed: $(tr '\n' ' ' </tmp/log)"; fi
echo "in the run" > shallow.txt
git add shallow.txt && git commit -q -m "work on a shallow clone" && echo "FACT commit=ok"
echo "FACT count=$(git rev-list --count HEAD)"
"""


def test_a_run_on_a_shallow_clone_has_a_working_git_log_and_its_commit_is_harvested(case: Case, tmp_path: Path) -> None:
    origin = make_repo(tmp_path / "origin")
    for n in (2, 3):
        (origin / f"f{n}.txt").write_text(f"{n}\n")
        git("add", "-A", cwd=origin)
        git("commit", "-qm", f"commit {n}", cwd=origin)
    shallow = tmp_path / "shallow"
    git("clone", "-q", "--depth", "1", f"file://{origin}", str(shallow), cwd=tmp_path)
    assert (shallow / ".git" / "shallow").is_file()
    base = head_of(shallow)
    task = case.create_task(shallow, "shallow", "--", "sh", "-c", SHALLOW_AGENT)

    result = case.cli("run", task)

    assert result.exit_code == 0, result.stdout + result.stderr
    seen = facts(result.stdout)
    assert seen["log"] == "commit 3;", seen["log"]
    assert seen["shallow"] == "true"
    assert seen["commit"] == "ok"
    assert seen["count"] == "2"
    record = case.run_record(run_id_of(result.stderr))
    assert [c["subject"] for c in record["details"]["harvest"]["commits"]] == ["work on a shallow clone"]
    branch = record["branch"]
    assert repo_git(shallow, "log", "-1", "--format=%s", branch).strip() == "work on a shallow clone"
    assert repo_git(shallow, "rev-parse", f"{branch}~1").strip() == base
    assert repo_git(shallow, "show", f"{branch}:shallow.txt") == "in the run\n"
    assert worktree_paths(shallow) == [str(shallow)]


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "status"],
    "properties": {"status": {"type": "string"}, "id": {"type": "string"}},
}


def _nothing_made(case: Case, repo: Path) -> None:
    assert case.runs() == [], "no run was recorded"
    assert case.containers() == []
    for folder in ("worktrees", "sandboxes"):
        path = case.root / ".launcher" / folder
        assert not path.exists() or not any(path.iterdir()), f"{folder}: {list(path.iterdir())}"
    assert worktree_paths(repo) == [str(repo)]
    assert repo_git(repo, "for-each-ref", "--format=%(refname)", "refs/heads/launcher/") == ""


@pytest.mark.parametrize(
    ("breakage", "message"),
    [
        (lambda text: text[: len(text) // 2], "is not valid JSON"),
        (lambda text: "[1, 2]\n", "is not a JSON object"),
        (lambda text: json.dumps({**json.loads(text), "status": 7}), "does not validate against"),
    ],
    ids=["truncated", "not-an-object", "against-the-schema"],
)
def test_a_hand_broken_task_file_is_refused_before_anything_is_made(
    case: Case, git_repo: Path, breakage: object, message: str
) -> None:
    (case.root / "tasks").mkdir(exist_ok=True)
    (case.root / "tasks" / "task.schema.json").write_text(json.dumps(SCHEMA))
    task = case.create_task(git_repo, "broken by hand")
    path = case.root / "tasks" / "active" / f"{task}.task.json"
    assert callable(breakage)
    path.write_text(breakage(path.read_text()))

    result = case.cli("run", task, "--", "sh", "-c", "echo ran > ran.txt")

    assert result.exit_code == 6, result.stdout + result.stderr
    assert message in result.stderr, result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr
    _nothing_made(case, git_repo)


def test_a_valid_hand_edit_is_refused_before_anything_is_made_with_how_to_import_it(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "edited by hand")
    path = case.root / "tasks" / "active" / f"{task}.task.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "notes": "by hand"}, indent=2) + "\n")

    result = case.cli("run", task, "--", "true")

    assert result.exit_code == 7, result.stdout + result.stderr
    assert "changed outside launcher" in result.stderr
    assert "launcher task list" in result.stderr
    _nothing_made(case, git_repo)
    # Imported, it runs.
    case.ok("task", "list")
    assert case.cli("run", task, "--", "true").exit_code == 0


__all__ = ["head_of", "make_repo"]

"""`launcher gc` removes only the folders launcher made, wherever [run].worktrees_dir points.

Real Docker engine, real git, the real CLI in a separate process.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from runkit import Case, worktree_paths

pytestmark = pytest.mark.docker


def test_gc_removes_a_killed_runs_folders_and_nothing_planted_beside_them(case: Case, git_repo: Path) -> None:
    worktrees = case.root / ".launcher" / "worktrees"
    task = case.create_task(git_repo, "killed with its worktree made", "--", "true")
    killed = case.cli("run", task, "--network", "none", env={"LAUNCHER_TEST_FAULTS": "kill@after:scope"})
    assert killed.exit_code == -signal.SIGKILL, killed
    (run_id,) = [r["id"] for r in case.runs()]
    assert (worktrees / run_id).is_dir()

    # Beside launcher's: a folder of somebody's, one named like a run, one like a half-deleted
    # worktree, one like a warm slot's, and a symlink to a folder that must survive.
    elsewhere = case.root.parent / "elsewhere"
    (elsewhere / "keep").mkdir(parents=True)
    (elsewhere / "keep" / "data.txt").write_text("precious\n")
    planted = [
        worktrees / "planted",
        worktrees / f"{task}.7",
        worktrees / f".trash-{run_id}-0badcafe",
        worktrees / ".pool" / "p0123456789",
        case.root / ".launcher" / "sandboxes" / f"{task}.8",
    ]
    for folder in planted:
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "file.txt").write_text("not launcher's\n")
    link = worktrees / "link"
    link.symlink_to(elsewhere, target_is_directory=True)

    dry = case.json("gc", "--dry-run")
    listed = " ".join(a["target"] for a in dry["actions"])
    assert not [p for p in [*planted, link, elsewhere] if str(p) in listed], dry
    assert {a["kind"] for a in dry["actions"]} == {"settle-run"}, dry

    report = case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    listed = " ".join(a["target"] for a in report["actions"])
    assert not [p for p in [*planted, link] if str(p) in listed], report
    assert not (worktrees / run_id).exists(), "launcher's own worktree is removed"
    assert not (case.root / ".launcher" / "sandboxes" / run_id).exists()
    assert worktree_paths(git_repo) == [str(git_repo)]
    for folder in planted:
        assert (folder / "sub" / "file.txt").read_text() == "not launcher's\n", folder
    assert link.is_symlink()
    assert (elsewhere / "keep" / "data.txt").read_text() == "precious\n"
    assert case.json("gc")["actions"] == []

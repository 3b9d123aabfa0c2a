"""A launcher killed with SIGKILL at every step of a run leaves nothing `gc` cannot settle.

For each fault point (before and after every step: claim, workspace, scope, container create,
start, wait, harvest, transition, cleanup) a real `launcher run` is killed there by the test-only
fault hook, then `launcher gc` must leave: no container, no worktree, no sandbox folder, no
lock held, the run settled as `lost`, the task retriable (a second run succeeds), its files
valid JSON, and the branch kept whenever the agent had committed.
"""

from __future__ import annotations

import fcntl
import json
import signal
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from helpers import containers_of, networks_of
from runkit import Case, agent_image, case, head_of, launcher_roots, make_repo, repo_git

__all__ = ["agent_image", "case", "launcher_roots"]
pytestmark = [pytest.mark.docker, pytest.mark.slow]

POINTS = [
    "after:claim",
    "before:workspace",
    "after:workspace",
    "before:scope",
    "after:scope",
    "before:network",
    "after:network",
    "before:create",
    "after:create",
    "after:start",
    "after:wait",
    "before:harvest",
    "before:transition",
    "before:cleanup",
    "after:cleanup",
]
AGENT = 'echo work > work.txt && git add work.txt && git commit -qm "agent work"'


def locks_free(root: Path) -> bool:
    """Every lock file under .launcher/locks can be taken at once: nobody holds one."""
    for path in (root / ".launcher" / "locks").rglob("*.lock"):
        with open(path, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return False
            fcntl.flock(handle, fcntl.LOCK_UN)
    return True


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_at_each_step_is_settled_by_gc(case: Case, tmp_path: Path, point: str) -> None:
    repo = make_repo(tmp_path / "repo")
    main_before = head_of(repo, "main")
    task = case.create_task(repo, "kill me", "--", "sh", "-c", AGENT)

    killed = case.cli("run", task, env={"LAUNCHER_TEST_FAULTS": f"kill@{point}"}, timeout=300)
    assert killed.exit_code == -signal.SIGKILL, f"expected SIGKILL at {point}: {killed}"

    report = case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    runs = case.runs()
    assert len(runs) == 1
    run = runs[0]
    assert run["state"] == "lost", run
    assert not containers_of(case.root, include_proxy=True), "gc leaves no proxy once no run needs it"
    assert not networks_of(case.root), "gc removes the run's network"
    assert not (case.root / ".launcher" / "egress" / "policies").exists() or not any(
        (case.root / ".launcher" / "egress" / "policies").iterdir()
    )
    for folder in ("worktrees", "sandboxes"):
        path = case.root / ".launcher" / folder
        assert not path.exists() or not any(path.iterdir()), f"{folder} left: {list(path.iterdir())}"
    worktrees = repo_git(repo, "worktree", "list", "--porcelain")
    assert worktrees.count("worktree ") == 1, worktrees
    assert locks_free(case.root)
    assert head_of(repo, "main") == main_before
    second_gc = case.json("gc")
    assert second_gc["actions"] == [], second_gc

    branch = f"refs/heads/{run['branch']}"
    if point in {"after:wait", "before:harvest", "before:transition", "before:cleanup"}:
        # The agent had finished and bundled its commit: gc's settle harvests it.
        assert repo_git(repo, "log", "-1", "--format=%s", branch).strip() == "agent work"

    task_file = case.root / "tasks" / "active" / f"{task}.task.json"
    assert json.loads(task_file.read_text())["id"] == task

    retry = case.cli("run", task)
    assert retry.exit_code == 0, retry
    assert [r["state"] for r in case.runs()] == ["lost", "exited"]

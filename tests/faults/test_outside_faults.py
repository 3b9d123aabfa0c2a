"""Faults from outside launcher: no Docker engine, a container killed by someone else, a dirty checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from helpers import docker_client
from runkit import Case, agent_image, case, launcher_roots, repo_git, wait_for

__all__ = ["agent_image", "case", "launcher_roots"]
pytestmark = pytest.mark.docker


def test_unreachable_docker_engine_is_a_clear_error_and_creates_nothing(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "No engine")
    result = case.cli("run", task, "--", "true", env={"DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    assert result.exit_code == 8, result.stderr
    assert "cannot reach the Docker engine" in result.stderr
    assert "Traceback" not in result.stderr
    assert case.runs() == []


def test_container_killed_from_outside_ends_the_run_instead_of_hanging(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "Killed by someone else")
    proc = case.popen("run", task, "--", "sleep", "600", stderr=subprocess.PIPE)
    run_id = case.wait_running(task)
    container = wait_for(lambda: case.containers(), timeout=60, what="the run's container")[0]
    docker_client().api.kill(container.id)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 10, stderr
    record = case.run_record(run_id)
    assert record["state"] == "failed"
    assert record["exit_code"] == 137
    assert not case.containers()


def test_a_dirty_main_checkout_is_neither_used_nor_touched(case: Case, git_repo: Path) -> None:
    (git_repo / "README.md").write_text("uncommitted edit\n")
    (git_repo / "scratch.txt").write_text("untracked\n")
    status_before = repo_git(git_repo, "status", "--porcelain")
    task = case.create_task(git_repo, "Dirty neighbour")
    result = case.cli("run", task, "--", "sh", "-c", "cat README.md; test ! -e scratch.txt && echo clean-base")
    assert result.exit_code == 0, result.stderr
    assert "# demo" in result.stdout
    assert "clean-base" in result.stdout
    assert repo_git(git_repo, "status", "--porcelain") == status_before
    assert (git_repo / "README.md").read_text() == "uncommitted edit\n"

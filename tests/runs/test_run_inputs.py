"""What a run is given: its command, secrets, and input launcher must refuse before creating anything."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from runkit import Case, branches, facts, run_id_of, worktree_paths

from launcher.errors import ExitCode

pytestmark = pytest.mark.docker


def assert_nothing_created(case: Case, repo: Path | None) -> None:
    """No run row, no container, no worktree, no run folder, no branch."""
    assert case.runs() == []
    assert case.containers() == []
    state = case.root / ".launcher"
    for folder in ("worktrees", "sandboxes", "runs"):
        path = state / folder
        assert not path.exists() or list(path.iterdir()) == [], f"{path} is not empty"
    if repo is not None:
        assert worktree_paths(repo) == [str(repo)]
        assert branches(repo) == []
        assert branches(repo, "refs/launcher/") == []


def test_non_git_repository_path_is_refused(case: Case, tmp_path: Path) -> None:
    plain = tmp_path / "just-a-folder"
    plain.mkdir()

    result = case.cli("run", "--repo", str(plain), "--title", "Nowhere", "--", "true")

    assert result.exit_code == ExitCode.INVALID_INPUT, result.stderr
    assert "not inside a git repository" in result.stderr
    assert str(plain) in result.stderr
    assert case.json("task", "list") == []
    assert_nothing_created(case, None)


def test_unknown_task_id_is_refused(case: Case, git_repo: Path) -> None:
    result = case.cli("run", "demo-99", "true")

    assert result.exit_code == ExitCode.NOT_FOUND, result.stderr
    assert "no task 'demo-99'" in result.stderr
    assert_nothing_created(case, git_repo)


@pytest.mark.parametrize(
    ("create_options", "run_options", "exit_code", "message"),
    [
        pytest.param(
            [],
            ["--image", "launcher/does-not-exist:1"],
            ExitCode.DOCKER,
            "image 'launcher/does-not-exist:1' is not in the local Docker engine",
            id="unknown-image",
        ),
    ],
)
def test_run_refused_before_anything_is_created(
    case: Case, git_repo: Path, create_options: list[str], run_options: list[str], exit_code: int, message: str
) -> None:
    task_id = case.create_task(git_repo, "Refused run", *create_options)

    result = case.cli("run", *run_options, task_id, "--", "sh", "-c", "echo the agent must not start")

    assert result.exit_code == exit_code, result.stdout + result.stderr
    assert message in result.stderr
    assert "the agent must not start" not in result.stdout
    assert_nothing_created(case, git_repo)
    assert case.json("task", "show", task_id)["status"] == "active"


def test_command_after_double_dash_following_the_task_id_is_the_agent_command(case: Case, git_repo: Path) -> None:
    """`launcher run TASK_ID -- CMD…` (the documented form): the `--` is not part of the command."""
    task_id = case.create_task(git_repo, "Dash dash")

    result = case.cli("run", task_id, "--", "sh", "-c", "echo agent ran")

    assert result.exit_code == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["agent ran"]
    run = case.run_record(run_id_of(result.stderr))
    assert run["details"]["command"] == ["sh", "-c", "echo agent ran"]


SECRET_NAME, SECRET_VALUE = "MY_TOKEN", "s3cr3t-value"
SECRET_AGENT = r"""
set -eu
echo "FACT sha=$(printf %s "$MY_TOKEN" | sha256sum | cut -d' ' -f1)"
echo "FACT length=${#MY_TOKEN}"
echo "token=$MY_TOKEN"
echo "twice: $MY_TOKEN and $MY_TOKEN"
"""


def test_secret_reaches_the_agent_and_nothing_launcher_writes(case: Case, git_repo: Path) -> None:
    result = case.cli(
        "run",
        "--secret",
        SECRET_NAME,
        "--repo",
        str(git_repo),
        "--title",
        "Uses a token",
        "--",
        "sh",
        "-c",
        SECRET_AGENT,
        env={SECRET_NAME: SECRET_VALUE},
    )

    assert result.exit_code == 0, result.stdout + result.stderr
    run_id = run_id_of(result.stderr)
    # The agent saw exactly the value (proved by its hash, which the redactor leaves alone).
    seen = facts(result.stdout)
    assert seen["sha"] == hashlib.sha256(SECRET_VALUE.encode()).hexdigest()
    assert seen["length"] == str(len(SECRET_VALUE))
    # Everything launcher shows or stores has *** instead.
    assert "token=***" in result.stdout.splitlines()
    logs = case.ok("logs", run_id).stdout
    assert "token=***" in logs.splitlines()
    assert "twice: *** and ***" in logs.splitlines()
    for shown in (result.stdout, result.stderr, logs, case.ok("ps", "--all", "--json").stdout):
        assert SECRET_VALUE not in shown
    assert case.run_record(run_id)["details"]["secrets"] == [SECRET_NAME]

    state_files = [p for p in (case.root / ".launcher").glob("state.db*") if p.is_file()]
    assert state_files, "no state store file found"
    task_files = [p for p in (case.root / "tasks").rglob("*") if p.is_file()]
    assert task_files, "no task files found"
    holding = []
    for dirpath, _, filenames in os.walk(case.root):  # the state store, task files, logs, everything
        for name in filenames:
            path = Path(dirpath, name)
            if not path.is_symlink() and SECRET_VALUE.encode() in path.read_bytes():
                holding.append(str(path))
    assert holding == [], f"the secret's value was written to {holding}"

"""[run] setup and [run] include in real runs: setup runs before the agent, marked in the log; a
failing setup is its own result (the agent never ran, its work is still captured); an included
.env reaches the agent, never its branch, and never the log; refusals come before anything is made."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from runkit import Case, branches, git, run_id_of, worktree_paths

from launcher.errors import ExitCode

pytestmark = pytest.mark.docker

TOKEN = "s3cr3t-" + "5d1c9a7e" * 3

SEES_AND_COMMITS = r"""
set -e
echo "agent: setup left $(cat setup-was-here)"
. ./.env
echo "agent: the token is $API_TOKEN"
echo "agent: config says $(cat config/local.yaml)"
echo "change" >>README.md
git add -A
git commit -q -m "everything, as git add -A sees it"
git status --porcelain --ignored
"""


def toml(setup: list[str], include: list[str]) -> str:
    return f"[run]\nsetup = {json.dumps(setup)}\ninclude = {json.dumps(include)}\n"


@pytest.mark.slow
def test_setup_runs_first_and_an_included_env_reaches_the_agent_not_its_branch_nor_the_log(
    case: Case, git_repo: Path
) -> None:
    (git_repo / ".env").write_text(f"API_TOKEN={TOKEN}\n")
    (git_repo / "config").mkdir()
    (git_repo / "config" / "local.yaml").write_text("port: 1\n")  # under 8 bytes: not scrubbed
    setup = ["echo setting up; echo from-setup >setup-was-here", "test -f .env && echo env-is-there"]
    (case.root / "launcher.toml").write_text(toml(setup, [".env", "config/local.yaml"]))
    task = case.create_task(git_repo, "Sees its .env")

    result = case.cli("run", task, "--", "sh", "-c", SEES_AND_COMMITS)

    assert result.exit_code == 0, result.stdout + result.stderr
    run = case.run_record(run_id_of(result.stderr))
    log = Path(run["details"]["log"]).read_text()
    marked = [line for line in log.splitlines() if line.startswith("launcher-setup:")]
    assert marked == [f"launcher-setup: $ {setup[0]}", f"launcher-setup: $ {setup[1]}", "launcher-setup: done"]
    assert log.index("setting up") < log.index("env-is-there") < log.index("agent: setup left from-setup")
    assert "agent: config says port: 1" in log
    branch = run["branch"]
    on_branch = git("ls-tree", "-r", "--name-only", branch, cwd=git_repo).split()
    assert "setup-was-here" in on_branch, "git add -A takes what setup made: it is the run's work"
    assert ".env" not in on_branch
    assert "config/local.yaml" not in on_branch
    assert TOKEN not in git("log", "-p", "--all", cwd=git_repo)
    assert (git_repo / ".env").read_text() == f"API_TOKEN={TOKEN}\n", "the owner's file is untouched"
    # Its lines are scrubbed from the log as secrets' values are.
    assert "agent: the token is ***" in log
    assert TOKEN not in log
    assert TOKEN not in result.stdout + result.stderr


def test_a_failing_setup_is_its_own_result_and_the_agent_never_runs(case: Case, git_repo: Path) -> None:
    setup = ["echo first-ok", "echo made >made-by-setup; echo broken >&2; exit 3", "echo never"]
    (case.root / "launcher.toml").write_text(toml(setup, []))
    task = case.create_task(git_repo, "Setup breaks")

    result = case.cli("run", task, "--", "sh", "-c", "echo AGENT-RAN; git commit -q --allow-empty -m agent")

    assert result.exit_code == ExitCode.RUN_FAILED, result.stdout + result.stderr
    assert "setup failed: `echo made >made-by-setup; echo broken >&2; exit 3` exited 3" in result.stderr
    assert "the agent did not run" in result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["state"] == "failed"
    assert run["details"]["setup"] == {"failed_command": setup[1], "exit_code": 3}
    assert run["details"]["infrastructure_failure"] is False
    log = Path(run["details"]["log"]).read_text()
    assert "AGENT-RAN" not in log
    assert "launcher-setup: $ echo never" not in log
    assert "launcher-setup: exit 3:" in log
    # Harvested all the same: what setup made is kept as the run's uncommitted work.
    refs = run["details"]["harvest"]["refs"]
    assert any(ref.endswith("/wip") for ref in refs), refs
    (wip,) = [ref for ref in refs if ref.endswith("/wip")]
    assert "made-by-setup" in git("ls-tree", "-r", "--name-only", wip, cwd=git_repo).split()


def test_includes_outside_the_repository_through_a_symlink_or_missing_are_refused_before_anything(
    case: Case, git_repo: Path, tmp_path: Path
) -> None:
    (tmp_path / "secret").write_text("TOKEN=elsewhere-0123456789\n")
    os.symlink(tmp_path / "secret", git_repo / ".env")
    task = case.create_task(git_repo, "Wants files")
    for include, why in [
        ("../secret", "goes up"),
        (str(tmp_path / "secret"), "absolute"),
        (".env", "symbolic link"),
        ("missing.env", "no such file"),
    ]:
        (case.root / "launcher.toml").write_text(toml([], [include]))
        result = case.cli("run", task, "--", "true")
        assert result.exit_code == ExitCode.INVALID_INPUT, (include, result.stdout + result.stderr)
        assert why in result.stderr, (include, result.stderr)
    assert case.runs() == []
    assert case.containers() == []
    assert branches(git_repo) == []
    assert worktree_paths(git_repo) == [str(git_repo)]

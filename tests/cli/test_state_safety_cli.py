"""Commands that must not touch what is not theirs: a worktrees_dir that is not a folder of its
own is refused, and commands that only look create nothing where launcher never ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import clean_env, invoke, make_repo

from launcher.errors import ExitCode


def snapshot(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


# -- [run].worktrees_dir ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    ("configured", "why"),
    [
        ("/", "is the file system's root"),
        (".", "is the case root itself"),
        ("..", "holds the case root"),
        ("PARENT", "holds the case root"),
        (".git/worktrees-here", "is inside a repository's git dir"),
        ("REPO_GIT", "is inside a repository's git dir"),
        (".launcher", "inside launcher's own .launcher/ folder"),
        (".launcher/runs", "inside launcher's own .launcher/ folder"),
        ("tasks", "inside the harness's tasks/ folder"),
    ],
)
def test_a_worktrees_dir_that_is_not_a_folder_of_its_own_is_refused(tmp_path: Path, configured: str, why: str) -> None:
    root = make_repo(tmp_path / "case")
    other = make_repo(tmp_path / "other")
    value = {"PARENT": str(tmp_path), "REPO_GIT": str(other / ".git" / "wt")}.get(configured, configured)
    (root / "launcher.toml").write_text(f'[run]\nworktrees_dir = "{value}"\n')
    before = snapshot(root)
    for command in (["gc", "--dry-run"], ["gc"], ["ps"]):
        result = invoke(["--root", str(root), *command])
        assert result.exit_code == ExitCode.INVALID_INPUT, (command, result)
        assert "[run].worktrees_dir" in result.stderr, result.stderr
        assert why in result.stderr, result.stderr
        assert result.stdout == "", "nothing is listed"
    assert snapshot(root) == before


@pytest.mark.slow
def test_a_worktrees_dir_of_its_own_is_accepted(tmp_path: Path) -> None:
    root = make_repo(tmp_path / "case")
    (root / "launcher.toml").write_text(f'[run]\nworktrees_dir = "{tmp_path / "worktrees"}"\n')
    result = invoke(["--root", str(root), "gc", "--dry-run"])
    assert result.exit_code == 0, result


# -- commands that only look --------------------------------------------------------------------

LOOKS = [
    (["ps"], 0, "no live runs (see --all)"),
    (["ps", "--all", "--json"], 0, "[]"),
    (["logs", "demo-1.1"], ExitCode.NOT_FOUND, ""),
    (["task", "list"], 0, "no tasks"),
    (["task", "list", "--json"], 0, "[]"),
    (["task", "show", "demo-1"], ExitCode.NOT_FOUND, ""),
    (["matrix"], 0, '{"include":[]}'),
    (["pool", "ls"], 0, "no pool slots"),
    # gc looks for this root's containers too: it needs the engine.
    pytest.param(["gc", "--dry-run"], 0, "nothing to collect", marks=pytest.mark.docker),
]


@pytest.mark.slow
@pytest.mark.parametrize(("command", "code", "out"), LOOKS)
def test_a_command_that_only_looks_creates_nothing_where_launcher_never_ran(
    tmp_path: Path, command: list[str], code: int, out: str
) -> None:
    """Run as a user would: in a fresh checkout, the root found from the current directory."""
    repo = make_repo(tmp_path / "fresh")
    before = snapshot(repo)
    done = subprocess.run(
        [sys.executable, "-m", "launcher", *command],
        cwd=repo,
        env={**clean_env(), "PYTHONPATH": os.pathsep.join(sys.path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == code, done
    assert done.stdout.strip() == out or (not out and done.stdout == ""), done.stdout
    assert f"no state store at {repo}/.launcher/state.db" in done.stderr, done.stderr
    assert "nothing was created" in done.stderr
    assert "Traceback" not in done.stderr
    assert snapshot(repo) == before, "a look created something"
    assert not (repo / ".launcher").exists()


def test_a_command_that_changes_something_still_makes_the_store(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fresh")
    result = invoke(["--root", str(repo), "task", "create", "--repo", str(repo), "--title", "First"])
    assert result.exit_code == 0, result
    assert (repo / ".launcher" / "state.db").is_file()
    listed = invoke(["--root", str(repo), "task", "list"])
    assert "no state store" not in listed.stderr
    assert "First" in listed.stdout


def test_a_state_store_url_to_a_missing_file_is_not_created_by_a_look(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "fresh")
    missing = tmp_path / "stores" / "state.db"
    result = invoke(["--root", str(repo), "--state-url", f"sqlite:///{missing}", "ps"])
    assert result.exit_code == 0, result
    assert f"no state store at {missing}" in result.stderr
    assert not missing.parent.exists()

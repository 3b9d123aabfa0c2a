"""`launcher init` and `launcher task …`: exact output, JSON fields and exit codes.

Most calls run in-process through the real entry point (`cli` fixture); a few go through
`python -m launcher` to check what a shell or CI job sees.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, make_repo, run_cli

from launcher.adapters import safe_io
from launcher.errors import ExitCode

TESTS = Path(__file__).resolve().parents[1]


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under root with its bytes (None for folders), the state store excluded."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if rel.startswith(".launcher/state.db"):
            continue
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


def create_json(cli: Any, repo: Path, title: str, *extra: str) -> dict[str, Any]:
    result = cli("task", "create", "--repo", str(repo), "--title", title, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# -- init --------------------------------------------------------------------------------------


def test_init_creates_the_layout_once(cli: Any, case_root: Path) -> None:
    first = cli("init")
    assert first.exit_code == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0] == f"case root:   {case_root}"
    assert lines[1] == f"state store: sqlite:///{case_root}/.launcher/state.db"
    created = {line.removeprefix("created:     ") for line in lines if line.startswith("created:")}
    assert created >= {
        f"{case_root}/tasks/active",
        f"{case_root}/.launcher/worktrees",
        f"{case_root}/.launcher/runs",
        f"{case_root}/launcher.toml",
        f"{case_root}/.launcher/.gitignore",
    }
    for path in created:
        assert Path(path).exists()
    assert (case_root / ".launcher" / "state.db").is_file()
    assert (case_root / ".launcher" / ".gitignore").read_text() == "*\n"


def test_init_twice_creates_nothing_and_keeps_user_edits(cli: Any, case_root: Path, git_repo: Path) -> None:
    assert cli("init").exit_code == 0
    config = case_root / "launcher.toml"
    config.write_text(config.read_text() + "\n# my own note\n")
    task = create_json(cli, git_repo, "Existing work")
    before = tree(case_root)

    second = cli("init")
    assert second.exit_code == 0, second.stderr
    assert "created:" not in second.stdout
    assert "already initialised; nothing changed" in second.stdout
    again = cli("init", "--json")
    assert again.exit_code == 0, again.stderr
    report = json.loads(again.stdout)
    assert report["created"] == []
    assert report["root"] == str(case_root)
    assert tree(case_root) == before
    assert json.loads(cli("task", "show", task["id"], "--json").stdout)["id"] == task["id"]


# -- task create -------------------------------------------------------------------------------


def test_task_create_prints_the_task(cli: Any, case_root: Path, git_repo: Path) -> None:
    result = cli("task", "create", "--repo", str(git_repo), "--title", "Fix login redirect")
    assert result.exit_code == 0, result.stderr
    json_path = case_root / "tasks" / "active" / "demo-1-fix-login-redirect.task.json"
    assert result.stdout.splitlines() == [
        "id:      demo-1-fix-login-redirect",
        "title:   Fix login redirect",
        "status:  active",
        f"repo:    demo ({git_repo.resolve()})",
        "slug:    fix-login-redirect",
        f"file:    {json_path}",
    ]
    assert result.stderr == ""
    assert json.loads(json_path.read_bytes())["id"] == "demo-1-fix-login-redirect"


def test_task_create_json_has_id_slug_status_and_paths(cli: Any, case_root: Path, git_repo: Path) -> None:
    data = create_json(cli, git_repo, "Add export", "--slug", "export-csv", "--image", "img:2", "--", "make", "x")
    assert data["id"] == "demo-1-export-csv"
    assert data["slug"] == "export-csv"
    assert data["status"] == "active"
    assert data["number"] == 1
    assert data["repo"] == "demo"
    assert data["repo_path"] == str(git_repo.resolve())
    assert data["image"] == "img:2"
    assert data["command"] == ["make", "x"]
    active = case_root / "tasks" / "active"
    assert data["paths"] == {
        "json": str(active / "demo-1-export-csv.task.json"),
        "md": str(active / "demo-1-export-csv.md"),
    }
    assert json.loads(Path(data["paths"]["json"]).read_bytes()) == data["doc"]
    assert Path(data["paths"]["md"]).read_text().startswith("# Add export\n")
    assert create_json(cli, git_repo, "Add export")["id"] == "demo-2-add-export"


def test_task_create_with_a_body_file(cli: Any, tmp_path: Path, git_repo: Path) -> None:
    body = tmp_path / "body.md"
    body.write_text("## Context\n\nUsers land on /home after login.\n")
    data = create_json(cli, git_repo, "Redirect", "--body-file", str(body))
    assert "Users land on /home after login." in Path(data["paths"]["md"]).read_text()


# -- list, show, set-status --------------------------------------------------------------------


def test_list_show_and_set_status(cli: Any, git_repo: Path) -> None:
    assert cli("task", "list").stdout == "no tasks\n"
    one = create_json(cli, git_repo, "First")
    two = create_json(cli, git_repo, "Second")

    listed = cli("task", "list")
    assert listed.exit_code == 0
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "REPO", "TITLE"]
    assert [line.split()[0] for line in listed.stdout.splitlines()[1:]] == [one["id"], two["id"]]

    moved = cli("task", "set-status", "demo-2", "implementing", "--reason", "picked up")
    assert (moved.exit_code, moved.stdout) == (0, f"{two['id']}: implementing\n")
    as_json = cli("task", "set-status", two["id"], "verifying", "--from", "implementing", "--json")
    assert as_json.exit_code == 0
    assert json.loads(as_json.stdout)["status"] == "verifying"

    only = json.loads(cli("task", "list", "--status", "verifying", "--json").stdout)
    assert [t["id"] for t in only] == [two["id"]]

    shown = cli("task", "show", "demo-2")
    assert shown.exit_code == 0
    assert f"id:      {two['id']}" in shown.stdout
    history = [line.split()[1:4] for line in shown.stdout.split("history:\n")[1].splitlines()]
    assert history == [["-", "->", "active"], ["active", "->", "implementing"], ["implementing", "->", "verifying"]]
    assert "picked up" in shown.stdout
    data = json.loads(cli("task", "show", two["id"], "--json").stdout)
    assert [(h["from_status"], h["to_status"]) for h in data["history"]] == [
        (None, "active"),
        ("active", "implementing"),
        ("implementing", "verifying"),
    ]
    assert data["runs"] == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["set-status", "demo-1", "verifying"], ExitCode.ILLEGAL_TRANSITION, "illegal transition active -> verifying"),
        (
            ["set-status", "demo-1", "verifying", "--from", "implementing"],
            ExitCode.CONFLICT,
            "is active, not implementing: someone else changed it first",
        ),
        (["set-status", "demo-9", "implementing"], ExitCode.NOT_FOUND, "no task 'demo-9'"),
        (["set-status", "demo-1", "done"], ExitCode.INVALID_INPUT, "unknown task status 'done'"),
        (["set-status", "demo-1", "implementing", "--from", "nope"], ExitCode.INVALID_INPUT, "unknown task status"),
        (["show", "nope-1-x"], ExitCode.NOT_FOUND, "no task 'nope-1-x'"),
        (["list", "--status", "finished"], ExitCode.INVALID_INPUT, "known statuses: active, implementing"),
    ],
    ids=["illegal", "conflict", "unknown-task", "unknown-status", "unknown-from", "show-unknown", "list-status"],
)
def test_failures_have_their_documented_exit_code(
    cli: Any, git_repo: Path, args: list[str], code: int, message: str
) -> None:
    create_json(cli, git_repo, "Target")
    before = cli("task", "list", "--json").stdout
    result = cli("task", *args)
    assert result.exit_code == code, result.stderr
    assert result.stderr.startswith("launcher: error: ")
    assert message in result.stderr
    assert result.stdout == ""
    assert cli("task", "list", "--json").stdout == before


def test_json_errors_are_one_document_on_stdout(cli: Any, git_repo: Path) -> None:
    create_json(cli, git_repo, "Target")
    result = cli("task", "set-status", "demo-1", "merged", "--json")
    assert result.exit_code == ExitCode.ILLEGAL_TRANSITION
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "illegal-transition"
    assert error["message"].startswith("illegal transition active -> merged")


@pytest.mark.slow
def test_exit_codes_reach_the_shell(case_root: Path, git_repo: Path) -> None:
    """The same contract through `python -m launcher`, as a shell script sees it."""
    root = ["--root", str(case_root)]
    created = run_cli([*root, "task", "create", "--repo", str(git_repo), "--title", "Shell", "--json"])
    assert created.exit_code == 0, created.stderr
    assert run_cli([*root, "task", "set-status", "demo-1", "merged"]).exit_code == ExitCode.ILLEGAL_TRANSITION
    lost = run_cli([*root, "task", "set-status", "demo-1", "verifying", "--from", "implementing"])
    assert lost.exit_code == ExitCode.CONFLICT
    assert "Traceback" not in lost.stderr
    assert run_cli([*root, "task", "show", "demo-7"]).exit_code == ExitCode.NOT_FOUND
    assert run_cli([*root, "task", "create", "--repo", str(git_repo), "--title", ""]).exit_code == 6


# -- file-system failures ----------------------------------------------------------------------


def test_a_full_disk_while_writing_task_files_is_exit_code_7(
    cli: Any, case_root: Path, git_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC from the task-file write must come out as a state-store error (exit 7) with the
    file named, not as a Python traceback; the status change itself is already committed."""
    task = create_json(cli, git_repo, "Disk fills up")

    def no_space(_fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safe_io.os, "fsync", no_space)
    result = cli("task", "set-status", task["id"], "implementing")
    monkeypatch.undo()
    assert result.exit_code == ExitCode.STATE_STORE, result.stderr
    assert "No space left on device" in result.stderr
    assert json.loads(Path(task["paths"]["json"]).read_bytes())["status"] == "active"


def test_numbers_stay_unique_after_the_state_store_is_moved_aside(cli: Any, case_root: Path, tmp_path: Path) -> None:
    """The corrupt-store hint says "move it aside to start afresh"; `init` then adopts the task
    files it finds. For a repository whose name ends in a number (`project-2024`), every
    existing task must be adopted and new IDs must not reuse their numbers."""
    repo = make_repo(tmp_path / "project-2024")
    first = create_json(cli, repo, "Alpha")
    second = create_json(cli, repo, "Beta")
    assert [first["id"], second["id"]] == ["project-2024-1-alpha", "project-2024-2-beta"]
    state_dir = case_root / ".launcher"
    shutil.move(state_dir, tmp_path / "launcher-state-aside")

    adopted = cli("init")
    assert adopted.exit_code == 0, adopted.stderr
    ids = [t["id"] for t in json.loads(cli("task", "list", "--json").stdout)]
    assert ids == ["project-2024-1-alpha", "project-2024-2-beta"], adopted.stdout
    third = create_json(cli, repo, "Gamma")
    assert third["id"] == "project-2024-3-gamma"


def test_root_that_is_not_a_directory_is_invalid_input(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    for root in [a_file, tmp_path / "missing"]:
        result = invoke(["--root", str(root), "task", "list"])
        assert result.exit_code == ExitCode.INVALID_INPUT
        assert f"case root {root} is not a directory" in result.stderr

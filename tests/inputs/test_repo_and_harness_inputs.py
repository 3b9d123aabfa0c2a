"""Bad repositories and bad harness files: a clear message, a documented exit code, nothing lost."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from helpers import CliResult, invoke, make_repo

from launcher.errors import ExitCode


def root_cli(root: Path, *args: str) -> CliResult:
    return invoke(["--root", str(root), *args])


def test_unresolvable_base_ref_is_refused_when_the_task_is_created(case_root: Path, git_repo: Path) -> None:
    result = root_cli(case_root, "task", "create", "--repo", str(git_repo), "--title", "x", "--base", "no-such-ref")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "unknown base ref 'no-such-ref'" in result.stderr
    assert json.loads(root_cli(case_root, "task", "list", "--json").stdout) == []


def test_repository_without_commits_is_refused_with_a_hint(case_root: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    subprocess.run(["git", "init", "-q", str(empty)], check=True)
    result = root_cli(case_root, "task", "create", "--repo", str(empty), "--title", "x")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "has no commits yet" in result.stderr
    assert "commit something first" in result.stderr


def test_bare_repository_is_refused(case_root: Path, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    subprocess.run(["git", "init", "-q", "--bare", str(bare)], check=True)
    result = root_cli(case_root, "task", "create", "--repo", str(bare), "--title", "x")
    assert result.exit_code == ExitCode.INVALID_INPUT
    assert "bare repository" in result.stderr


def test_non_utf8_repository_path_is_refused_cleanly(case_root: Path, tmp_path: Path) -> None:
    raw = os.fsencode(tmp_path) + b"/repo-\xff"
    os.mkdir(raw)
    make_repo(Path(os.fsdecode(raw)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher",
            "--root",
            str(case_root),
            "task",
            "create",
            "--repo",
            os.fsdecode(raw),
            "--title",
            "x",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == ExitCode.INVALID_INPUT, proc.stderr
    assert "not valid UTF-8" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_task_files_are_reported_and_left_untouched(case_root: Path, git_repo: Path) -> None:
    active = case_root / "tasks" / "active"
    active.mkdir(parents=True)
    good = {"id": "demo-1-good", "status": "verifying", "created": "2026-03-01T00:00:00Z", "repo": "demo"}
    (active / "demo-1-good.task.json").write_text(json.dumps(good))
    truncated = b'{"id": "demo-2-cut", "status": "act'
    (active / "demo-2-cut.task.json").write_bytes(truncated)
    wrong_status = json.dumps({"id": "demo-3-odd", "status": "shipped", "repo": "demo"}).encode()
    (active / "demo-3-odd.task.json").write_bytes(wrong_status)
    not_object = b"[1, 2, 3]"
    (active / "demo-4-list.task.json").write_bytes(not_object)

    result = root_cli(case_root, "init")

    assert result.exit_code == 0, result.stderr
    assert "adopted:     demo-1-good" in result.stdout
    assert "demo-2-cut.task.json: not valid JSON" in result.stdout
    assert "demo-3-odd.task.json: unknown status 'shipped'" in result.stdout
    assert "demo-4-list.task.json: not a JSON object" in result.stdout
    assert (active / "demo-2-cut.task.json").read_bytes() == truncated
    assert (active / "demo-3-odd.task.json").read_bytes() == wrong_status
    assert (active / "demo-4-list.task.json").read_bytes() == not_object
    listed = json.loads(root_cli(case_root, "task", "list", "--json").stdout)
    assert [t["id"] for t in listed] == ["demo-1-good"]
    # Numbers continue after every task file on disk, readable or not:
    created = json.loads(
        root_cli(case_root, "task", "create", "--repo", str(git_repo), "--title", "next", "--json").stdout
    )
    assert created["id"] == "demo-5-next"


def test_cross_repo_tasks_take_cases_x_prefix(case_root: Path, git_repo: Path) -> None:
    first = json.loads(
        root_cli(
            case_root, "task", "create", "--repo", str(git_repo), "--title", "Update badges", "--cross-repo", "--json"
        ).stdout
    )
    second = json.loads(
        root_cli(
            case_root, "task", "create", "--repo", str(git_repo), "--title", "Bump CI", "--cross-repo", "--json"
        ).stdout
    )
    plain = json.loads(
        root_cli(case_root, "task", "create", "--repo", str(git_repo), "--title", "Own", "--json").stdout
    )
    assert [first["id"], second["id"], plain["id"]] == ["x-1-update-badges", "x-2-bump-ci", "demo-1-own"]
    assert first["doc"]["repo"] == "demo"

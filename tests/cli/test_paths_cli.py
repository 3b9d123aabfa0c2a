"""`launcher paths check|render|fix` through the real entry point, in-process and as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import CliResult, invoke, run_cli

Cli = Callable[..., CliResult]
OLD = "/Users/alice/dev/case"


def write(base: Path, rel: str, text: str, mode: int = 0o644) -> Path:
    path = base / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def snapshot(base: Path) -> dict[str, tuple[bytes, int]]:
    return {
        p.relative_to(base).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def harness(root: Path) -> Path:
    write(root, "config/app.json", '{"name": "demo"}\n')
    write(
        root,
        "scripts/where.sh",
        f'#!/usr/bin/env bash\nset -eu\nROOT={OLD}\necho "root=$ROOT"\ncat "{OLD}/config/app.json"\n',
        mode=0o755,
    )
    write(root, "skills/run/SKILL.md", f"# Run\n\nStart with `{OLD}/scripts/where.sh`.\n")
    write(root, "AGENTS.md", "No paths here.\nOutside: /home/bob/notes.md\n")
    return root


# --- check ------------------------------------------------------------------------------------


def test_check_json_lists_hits_and_exits_1(case_root: Path) -> None:
    harness(case_root)
    result = invoke(["--root", str(case_root), "paths", "check", "--json"])
    assert result.exit_code == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["root"] == str(case_root.resolve())
    assert data["count"] == 4
    assert data["hits"] == [
        {
            "file": "AGENTS.md",
            "line": 2,
            "column": 10,
            "found": "/home/bob/notes.md",
            "suggestion": "(outside the harness: make it configurable)",
        },
        {"file": "scripts/where.sh", "line": 3, "column": 6, "found": OLD, "suggestion": "$CASE_ROOT"},
        {
            "file": "scripts/where.sh",
            "line": 5,
            "column": 6,
            "found": f"{OLD}/config/app.json",
            "suggestion": "$CASE_ROOT/config/app.json",
        },
        {
            "file": "skills/run/SKILL.md",
            "line": 3,
            "column": 13,
            "found": f"{OLD}/scripts/where.sh",
            "suggestion": "$CASE_ROOT/scripts/where.sh",
        },
    ]


def test_check_text_output_defaults_to_the_case_root(cli: Cli, case_root: Path) -> None:
    harness(case_root)
    result = cli("paths", "check")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "AGENTS.md:2: /home/bob/notes.md -> (outside the harness: make it configurable)",
        f"scripts/where.sh:3: {OLD} -> $CASE_ROOT",
        f"scripts/where.sh:5: {OLD}/config/app.json -> $CASE_ROOT/config/app.json",
        f"skills/run/SKILL.md:3: {OLD}/scripts/where.sh -> $CASE_ROOT/scripts/where.sh",
    ]
    assert lines[4] == (
        f"4 hard-coded home path(s) in 3 file(s) under {case_root.resolve()} (hard-coded harness root: {OLD})"
    )
    assert len(lines) == 5


def test_check_clean_tree_exits_0(cli: Cli, case_root: Path, tmp_path: Path) -> None:
    write(case_root, "AGENTS.md", "Use $CASE_ROOT/scripts/where.sh or ~/dev/case.\n")
    result = cli("paths", "check")
    assert (result.exit_code, result.stdout) == (0, f"no hard-coded home paths under {case_root.resolve()}\n")
    other = tmp_path / "other"
    other.mkdir()
    result = cli("paths", "check", str(other), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "root": str(other.resolve()),
        "hard_coded_root": None,
        "hits": [],
        "count": 0,
    }


def test_check_missing_folder_is_not_found(cli: Cli, tmp_path: Path) -> None:
    result = cli("paths", "check", str(tmp_path / "missing"), "--json")
    assert result.exit_code == 5
    assert json.loads(result.stdout)["error"]["code"] == "not-found"


@pytest.mark.slow
def test_check_as_a_real_process(tmp_path: Path) -> None:
    root = harness(tmp_path / "harness")
    result = run_cli(["paths", "check", str(root), "--json"], timeout=120)
    assert result.exit_code == 1, result.stderr
    data = json.loads(result.stdout)
    assert data["count"] == 4
    assert data["hard_coded_root"] == OLD
    assert [(h["file"], h["line"]) for h in data["hits"]] == [
        ("AGENTS.md", 2),
        ("scripts/where.sh", 3),
        ("scripts/where.sh", 5),
        ("skills/run/SKILL.md", 3),
    ]
    clean = tmp_path / "clean"
    write(clean, "README.md", "nothing to see\n")
    assert run_cli(["paths", "check", str(clean)], timeout=120).exit_code == 0


# --- render -----------------------------------------------------------------------------------


def test_render_folder_and_file(cli: Cli, case_root: Path, tmp_path: Path) -> None:
    src = tmp_path / "tpl"
    write(src, "AGENTS.md", "root=$CASE_ROOT braces=${CASE_ROOT} keep=$CASE_ROOT_X \\$CASE_ROOT\n")
    write(src, "bin/run.sh", 'exec "$CASE_ROOT/scripts/where.sh"\n', mode=0o755)
    write(src, "data.csv", "$CASE_ROOT\n")
    out = tmp_path / "out"
    result = cli("paths", "render", str(src), str(out), "--root", "/opt/case", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["rendered"], data["copied"], data["replacements"]) == (2, 1, 3)
    assert (out / "AGENTS.md").read_text() == "root=/opt/case braces=/opt/case keep=$CASE_ROOT_X \\$CASE_ROOT\n"
    assert (out / "bin/run.sh").read_text() == 'exec "/opt/case/scripts/where.sh"\n'
    assert os.access(out / "bin/run.sh", os.X_OK)
    assert (out / "data.csv").read_text() == "$CASE_ROOT\n"

    # Without --root: the case root.
    result = cli("paths", "render", str(src / "AGENTS.md"), str(tmp_path / "single.md"))
    assert result.exit_code == 0, result.stderr
    root = str(case_root.resolve())
    assert (tmp_path / "single.md").read_text() == f"root={root} braces={root} keep=$CASE_ROOT_X \\$CASE_ROOT\n"
    assert "1 rendered, 0 copied, 2 replacement(s)" in result.stdout


def test_render_refuses_dest_inside_src(cli: Cli, tmp_path: Path) -> None:
    src = tmp_path / "tpl"
    write(src, "a.md", "$CASE_ROOT\n")
    result = cli("paths", "render", str(src), str(src / "out"), "--root", "/r", "--json")
    assert result.exit_code == 6
    assert "inside SRC" in json.loads(result.stdout)["error"]["message"]
    assert not (src / "out").exists()


# --- fix --------------------------------------------------------------------------------------


def test_fix_prints_a_diff_then_writes_and_a_second_run_is_a_no_op(cli: Cli, case_root: Path) -> None:
    harness(case_root)
    before = snapshot(case_root)

    dry = cli("paths", "fix", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert snapshot(case_root) == before
    assert "--- a/scripts/where.sh\n+++ b/scripts/where.sh\n" in dry.stdout
    assert f"-ROOT={OLD}\n" in dry.stdout
    assert '+ROOT="${CASE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}"\n' in dry.stdout
    assert f"-Start with `{OLD}/scripts/where.sh`.\n+Start with `$CASE_ROOT/scripts/where.sh`.\n" in dry.stdout
    assert "left: AGENTS.md:2: /home/bob/notes.md -> (outside the harness: make it configurable)" in dry.stdout
    assert dry.stdout.splitlines()[-1] == f"would change 3 path(s) in 2 file(s) under {case_root.resolve()}"

    fixed = cli("paths", "fix")
    assert fixed.exit_code == 0, fixed.stderr
    assert fixed.stdout.replace("changed 3", "would change 3") == dry.stdout
    assert (case_root / "skills/run/SKILL.md").read_text() == "# Run\n\nStart with `$CASE_ROOT/scripts/where.sh`.\n"
    assert (case_root / "AGENTS.md").read_text() == "No paths here.\nOutside: /home/bob/notes.md\n"

    after = snapshot(case_root)
    again = cli("paths", "fix", "--json")
    assert again.exit_code == 0, again.stderr
    data = json.loads(again.stdout)
    assert (data["files"], data["changed_files"], data["replacements"]) == ([], 0, 0)
    assert snapshot(case_root) == after
    assert cli("paths", "fix").stdout.splitlines()[-1] == f"nothing to fix under {case_root.resolve()}"


def test_fix_json_lists_changed_files_and_counts(cli: Cli, case_root: Path) -> None:
    harness(case_root)
    result = cli("paths", "fix", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["dry_run"] is True
    assert data["hard_coded_root"] == OLD
    assert [(f["file"], f["replacements"], f["lines"]) for f in data["files"]] == [
        ("scripts/where.sh", 2, [3, 5]),
        ("skills/run/SKILL.md", 1, [3]),
    ]
    assert data["files"][1]["diff"].startswith("--- a/skills/run/SKILL.md\n+++ b/skills/run/SKILL.md\n@@")
    assert (data["changed_files"], data["replacements"]) == (2, 3)
    assert [h["file"] for h in data["unfixed"]] == ["AGENTS.md"]


@pytest.mark.slow
def test_fixed_script_runs_from_a_copied_harness(tmp_path: Path) -> None:
    root = harness(tmp_path / "case")
    result = run_cli(["paths", "fix", str(root)], timeout=120)
    assert result.exit_code == 0, result.stderr

    copy = tmp_path / "moved" / "case copy"
    shutil.copytree(root, copy)
    env = {k: v for k, v in os.environ.items() if k not in ("CASE_ROOT", "CDPATH")}

    def run(cwd: Path, **extra: str) -> str:
        script = os.path.relpath(copy / "scripts/where.sh", cwd)
        proc = subprocess.run(
            ["bash", script],
            cwd=cwd,
            env={**env, **extra},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return proc.stdout

    assert run(copy) == f'root={copy}\n{{"name": "demo"}}\n'
    assert run(tmp_path) == f'root={copy}\n{{"name": "demo"}}\n'
    assert run(tmp_path, CASE_ROOT=str(root)) == f'root={root}\n{{"name": "demo"}}\n'

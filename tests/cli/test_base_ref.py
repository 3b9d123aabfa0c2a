"""`[run].base_ref` in launcher.toml: what new tasks start from unless `--base` says otherwise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from helpers import git, make_repo


def _with_branch(tmp_path: Path) -> Path:
    repo = make_repo(tmp_path / "demo")
    git("checkout", "-q", "-b", "release", cwd=repo)
    (repo / "RELEASE").write_text("only on release\n")
    git("add", "RELEASE", cwd=repo)
    git("commit", "-q", "-m", "release", cwd=repo)
    git("checkout", "-q", "main", cwd=repo)
    return repo


def _created(cli: Any, repo: Path, *extra: str) -> dict[str, Any]:
    result = cli("task", "create", "--repo", str(repo), "--title", "Use the base", "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_task_create_starts_from_run_base_ref(cli: Any, case_root: Path, tmp_path: Path) -> None:
    repo = _with_branch(tmp_path)
    (case_root / "launcher.toml").write_text('[run]\nbase_ref = "release"\n')
    assert _created(cli, repo)["base_ref"] == "release"


def test_base_overrides_run_base_ref(cli: Any, case_root: Path, tmp_path: Path) -> None:
    repo = _with_branch(tmp_path)
    (case_root / "launcher.toml").write_text('[run]\nbase_ref = "release"\n')
    assert _created(cli, repo, "--base", "main")["base_ref"] == "main"


def test_without_run_base_ref_tasks_start_from_head(cli: Any, case_root: Path, tmp_path: Path) -> None:
    assert _created(cli, _with_branch(tmp_path))["base_ref"] == "HEAD"


def test_an_unknown_run_base_ref_is_refused_before_a_task_is_made(cli: Any, case_root: Path, tmp_path: Path) -> None:
    repo = _with_branch(tmp_path)
    (case_root / "launcher.toml").write_text('[run]\nbase_ref = "no-such-branch"\n')
    result = cli("task", "create", "--repo", str(repo), "--title", "Nope")
    assert result.exit_code == 6, result.stderr
    assert "unknown base ref 'no-such-branch'" in result.stderr
    listed = cli("task", "list", "--json")
    assert json.loads(listed.stdout) == []

"""A run made with `launcher run --repo … --title …` starts from `[run].base_ref`."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import git
from runkit import Case, facts, head_of

pytestmark = pytest.mark.docker


def test_run_starts_from_run_base_ref(case: Case, git_repo: Path) -> None:
    git("checkout", "-q", "-b", "release", cwd=git_repo)
    (git_repo / "RELEASE").write_text("only on release\n")
    git("add", "RELEASE", cwd=git_repo)
    git("commit", "-q", "-m", "release", cwd=git_repo)
    git("checkout", "-q", "main", cwd=git_repo)
    (case.root / "launcher.toml").write_text('[run]\nbase_ref = "release"\n')

    result = case.ok(
        "run", "--repo", str(git_repo), "--title", "On release", "--network", "none",
        "--", "sh", "-c", 'echo "FACT release=$(cat RELEASE)"; echo "FACT base=$CASE_BASE_SHA"',
    )  # fmt: skip

    seen = facts(result.stdout)
    assert seen["release"] == "only on release"
    assert seen["base"] == head_of(git_repo, "release")
    (task,) = case.json("task", "list")
    assert task["base_ref"] == "release"

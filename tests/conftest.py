"""Fixtures shared by every suite: real git repositories, case roots, the CLI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import CliResult, git, invoke, make_repo, run_cli

__all__ = ["CliResult", "git", "invoke", "make_repo", "run_cli"]
pytest_plugins = ["forgekit"]  # the stand-in forge (tests/forgekit.py): the `forge` fixture

# Ryuk (testcontainers' reaper) cannot be pulled here; tests label and remove what they create.
os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A repository with two files and one commit on `main`."""
    return make_repo(tmp_path / "demo")


@pytest.fixture
def case_root(tmp_path: Path) -> Path:
    root = tmp_path / "case"
    root.mkdir()
    return root


@pytest.fixture
def cli(case_root: Path) -> object:
    """`cli("task", "list")` runs in-process against `case_root`."""

    def call(*args: str) -> CliResult:
        return invoke(["--root", str(case_root), *args])

    return call

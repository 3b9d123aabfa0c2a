"""Fixtures for the case-harness drop-in tests (builders in harness_kit.py)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness_kit import build_harness
from runkit import Case, agent_image, launcher_roots, shared_dir

__all__ = ["agent_image", "launcher_roots", "shared_dir"]


@pytest.fixture
def harness(shared_dir: Path, launcher_roots: list[Path]) -> Iterator[Case]:
    """A case harness (see harness_kit.py) as the test's case root, driven through the CLI."""
    root = build_harness(shared_dir)
    launcher_roots.append(root.resolve())
    driver = Case(root)
    try:
        yield driver
    finally:
        driver.kill_strays()

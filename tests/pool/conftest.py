"""Fixtures for the warm pool tests (real Docker engine, real git): those of tests/runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import agent_image, case, launcher_roots, shared_dir

__all__ = ["agent_image", "case", "launcher_roots", "shared_dir"]


@pytest.fixture(autouse=True)
def _no_leftover_containers(launcher_roots: list[Path]) -> list[Path]:
    """Every test ends with no container or network of its case root left (slots included)."""
    return launcher_roots

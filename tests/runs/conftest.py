"""Fixtures for the isolated-run integration tests (real Docker engine, real git).

The machinery lives in ``runkit.py`` so that ``tests/security`` can share it. Every test
here needs the agent image and gets the leftover-container check (``launcher_roots``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runkit import agent_image, case, launcher_roots, shared_dir

__all__ = ["agent_image", "case", "launcher_roots", "shared_dir"]


@pytest.fixture(autouse=True)
def _no_leftover_containers(launcher_roots: list[Path]) -> list[Path]:
    """Applies the leftover-container check to every test in this folder."""
    return launcher_roots

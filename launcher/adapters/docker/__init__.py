"""Docker adapters: the sandbox a run executes in, and the images it runs."""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def entry_script() -> Path:
    return Path(str(resources.files("launcher.adapters.docker") / "entry.sh"))

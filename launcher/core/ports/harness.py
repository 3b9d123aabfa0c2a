"""What a run sees of the harness at CASE_ROOT: a copy of its tracked files, made by the host."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, Protocol

MountPoint = Literal["file", "dir"]


class HarnessViewPort(Protocol):
    def export(self, dest: Path, keep: Callable[[str], bool], mount_points: Mapping[str, MountPoint]) -> bool:
        """Make ``dest`` a copy of the harness's tracked files for which ``keep(path)`` holds.

        ``path`` is relative to the case root, with ``/`` separators. ``mount_points`` are
        paths the run's own files are mounted over (an empty file or folder is made where the
        copy has none: nothing can be created inside a read-only mount). False when the case
        root is in no git repository: it tracks nothing, and ``dest`` holds only the mount points.
        """
        ...

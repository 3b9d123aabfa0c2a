"""Files of today's case's repo-local state (``<repo>/.case/``), read and written by the host.

Every path is ``top`` plus folder names, walked one folder at a time without following a
symbolic link anywhere on the way: ``top`` is a run's worktree (the agent's) or a repository's
main checkout (whose ``.case/`` earlier runs' files were carried into).
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class CaseStatePort(Protocol):
    def list_files(self, top: Path, parts: list[str]) -> list[str]:
        """Names of the regular files in ``top/parts…`` (sorted); [] where the folder is absent."""
        ...

    def read(self, top: Path, parts: list[str], *, max_bytes: int) -> bytes | None:
        """A regular file's bytes; None where it is absent; over ``max_bytes`` raises OverCapError."""
        ...

    def write_new(self, top: Path, parts: list[str], data: bytes, *, owner: tuple[int, int] | None) -> bool:
        """Create the file (and its folders) with ``data``; False, and nothing written, if it exists."""
        ...

    def replace(self, top: Path, parts: list[str], data: bytes, *, owner: tuple[int, int] | None) -> None:
        """Replace the file atomically (folders made as needed)."""
        ...

    def append(self, top: Path, parts: list[str], data: bytes, *, owner: tuple[int, int] | None) -> None:
        """Append under an exclusive lock of the file itself, so appenders on this host never interleave."""
        ...

"""Which folders launcher made: the only ones `launcher gc` may ever remove."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Protocol


class FolderMarksPort(Protocol):
    """Marks kept where only the host writes, one per folder launcher made for a run or a slot.

    A mark names the folder's path and the identity (device, inode) it had when made, so it
    cannot be claimed by a folder someone puts at that path later, it follows the folder when
    launcher renames it (a retired worktree's trash folder), and nothing a run writes inside
    its folders can make or move one.
    """

    def making(self, path: Path) -> AbstractContextManager[None]:
        """Around the step that makes ``path`` (a mkdir, or a rename onto it): marked once it is
        a folder launcher made; nothing is marked when ``path`` existed before."""
        ...

    def marked(self) -> list[Path]:
        """Every marked path, sorted."""
        ...

    def is_made(self, path: Path, *, now_at: Path | None = None) -> bool:
        """Whether the folder at ``now_at`` (default ``path``) is the one launcher made at
        ``path``: a real directory (a symlink never is) whose identity is the mark's, or,
        where launcher stopped between making it and marking it, an empty one."""
        ...

    def forget(self, path: Path) -> None: ...


class NoMarks:
    """Marks nothing and knows no folder: with it, gc removes no folder it found."""

    def making(self, path: Path) -> AbstractContextManager[None]:
        return nullcontext()

    def marked(self) -> list[Path]:
        return []

    def is_made(self, path: Path, *, now_at: Path | None = None) -> bool:
        return False

    def forget(self, path: Path) -> None:
        return None

"""Host git for a run's result back in a person's repository: diff, merge, apply, checkout, prune.

Every call is host git on the real repository (its ``--git-dir``, the main checkout as
``--work-tree`` where one is needed), from a folder no agent can write, ``GIT_*`` stripped,
no hooks, no external diff drivers or textconv. Nothing here runs git where an agent wrote.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

MergeMode = Literal["ff", "no-ff", "squash"]


class FileChange(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    insertions: int | None = None  # None: a binary file
    deletions: int | None = None


class MergeAttempt(BaseModel):
    """What ``git merge`` did in the main checkout: merged, or stopped and aborted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    merged: bool
    head: str = ""  # the checkout's HEAD afterwards
    conflicts: list[str] = []
    aborted: bool = False  # the half-done merge was undone, nothing is left of it
    output: str = ""


class ResultsGit(Protocol):
    """One repository on the host, as `diff`, `merge`, `apply`, `checkout` and `prune` use it."""

    toplevel: Path

    @property
    def owner_ids(self) -> tuple[int, int]: ...

    def ref_value(self, ref: str) -> str | None: ...

    def is_ancestor(self, ancestor: str, descendant: str) -> bool: ...

    def commit_count(self, base: str, tip: str) -> int:
        """How many commits ``base..tip`` holds."""
        ...

    def current_branch(self) -> str | None:
        """The branch checked out in the main checkout; None when it is detached."""
        ...

    def checked_out(self) -> dict[str, str]:
        """Every branch checked out in some worktree of the repository -> that worktree's path."""
        ...

    def refs_under(self, prefix: str) -> dict[str, str]: ...

    # -- diff ---------------------------------------------------------------------------

    def diff(self, base: str, tip: str, *, stat: bool) -> bytes:
        """``git diff base tip`` (or its ``--stat``) as git prints it, without color."""
        ...

    def numstat(self, base: str, tip: str) -> list[FileChange]: ...

    # -- the main checkout ---------------------------------------------------------------

    def dirty_paths(self) -> list[str]:
        """Tracked paths of the main checkout with staged or unstaged changes."""
        ...

    def operation_in_progress(self) -> str | None:
        """A merge, cherry-pick, revert or rebase the main checkout is in the middle of, or None."""
        ...

    def merge(self, tip: str, *, mode: MergeMode, message: str) -> MergeAttempt:
        """``git merge`` of ``tip`` into the main checkout's branch; a conflict is aborted."""
        ...

    def fast_forward(self, branch: str, new: str, old: str) -> bool:
        """Move ``branch`` from ``old`` to ``new`` (compare-and-set); False when it had moved."""
        ...

    def conflicts(self, base: str, ours: str, theirs: str) -> list[str] | None:
        """The paths a three-way merge of ``theirs`` into ``ours`` from ``base`` conflicts in;
        None when it merges cleanly. Touches neither the index nor any file."""
        ...

    def changed_paths(self, base: str, tip: str) -> list[str]:
        """Every path ``base..tip`` changes (both sides of a rename)."""
        ...

    def apply(self, base: str, tip: str) -> None:
        """``base..tip`` into the main checkout as staged, uncommitted changes (all or nothing)."""
        ...

    def add_checkout(self, path: Path, tip: str) -> None:
        """A new worktree at the empty folder ``path``, detached at ``tip``, checked out by host git."""
        ...

    # -- prune ---------------------------------------------------------------------------

    def delete_refs(self, expected: dict[str, str]) -> str | None:
        """Delete every ref of ``expected`` (ref -> the object it must still point at), all or
        none, under the repository's lock. None when they are gone; else why all were kept
        (one moved, or a branch is checked out in a worktree)."""
        ...

"""Building and checking the images runs use: the repository's dev environment plus launcher's layer."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from launcher.core.ports.repo import RepoPort


class ImageCheck(BaseModel):
    """What a one-off container of an image showed about the run's contract."""

    model_config = ConfigDict(frozen=True)

    image_id: str
    missing: list[str] = Field(default_factory=list, description="commands a run needs that are not on PATH")
    problems: list[str] = Field(default_factory=list, description="other ways the image breaks a run")
    cached: bool = Field(default=False, description="passed before: not run again")

    @property
    def ok(self) -> bool:
        return not self.missing and not self.problems


class CommitBuild(BaseModel):
    """An image built from a folder of the repository as a commit holds it (never a worktree)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    commit: str
    context: str = Field(description="folder relative to the repository's top; '' is the top")
    dockerfile: str = Field(description="the Dockerfile's path inside the context")
    args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None
    tag: str
    labels: dict[str, str] = Field(default_factory=dict)


class ImageBuilderPort(Protocol):
    """Builds images for runs on the host's engine (never inside a run), and checks any image
    a run is about to use. Reads the repository only through host git, from a commit."""

    def read_file(self, repo: RepoPort, commit: str, path: str, *, max_bytes: int) -> bytes | None:
        """The blob at ``path`` in ``commit`` (None if there is no such file); refused over ``max_bytes``."""
        ...

    def tree_id(self, repo: RepoPort, commit: str, path: str) -> str | None:
        """The object ID of the folder ``path`` ('' for the top) in ``commit``; None if it is not a folder."""
        ...

    def find(self, tag: str) -> str | None:
        """The ID of the local image ``tag``, or None."""
        ...

    def local_or_pull(self, ref: str) -> str:
        """The ID of the image ``ref``, pulled first if the engine does not have it."""
        ...

    def image_env(self, image_id: str) -> dict[str, str]:
        """The environment the image sets (its ENV lines)."""
        ...

    def build_from_commit(self, repo: RepoPort, build: CommitBuild) -> str:
        """Build ``build`` with its context from ``git archive``; the new image's ID."""
        ...

    def build_dockerfile(self, dockerfile: str, *, tag: str, labels: dict[str, str]) -> str:
        """Build a Dockerfile that needs no context (launcher's layer); the new image's ID."""
        ...

    def check(self, image_id: str) -> ImageCheck:
        """Run a throwaway container of the image the way a run would (an arbitrary uid, read-only
        root, tmpfs /tmp and $HOME, no network) and report what a run would miss. A pass is
        remembered per image ID."""
        ...

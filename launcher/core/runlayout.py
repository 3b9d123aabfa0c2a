"""A run's layout: where its folders are on the host and what they are called inside its container."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Paths inside the container. The private git dir and alternates name these, never host
# paths, so nothing depends on where the case root lives on the host.
CONTAINER_WORKTREE = "/workspace"
CONTAINER_GIT_DIR = "/launcher/git"
CONTAINER_OBJECTS = "/launcher/objects"
CONTAINER_OUT = "/launcher/out"
CONTAINER_ENTRY = "/launcher/entry.sh"
CONTAINER_CASE_ROOT = "/case"
CONTAINER_HOME = "/home/agent"
# CASE_DATA_DIR of a run of today's case's task: its own config.json and projects.json.
CONTAINER_CASE_DATA = "/launcher/case-data"
# In the worktrees folder, ``.trash-<holder>-<random>``: a worktree taken out of its repository,
# being deleted. One folder each, none shared, so nothing is left once it is gone; gc deletes
# what a killed launcher left.
TRASH_PREFIX = ".trash-"


@dataclass(frozen=True)
class RunPaths:
    run_id: str
    worktree: Path
    sandbox: Path
    record: Path

    @classmethod
    def of(cls, run_id: str, worktree: Path, state_dir: Path) -> RunPaths:
        return cls(run_id, worktree, state_dir / "sandboxes" / run_id, state_dir / "runs" / run_id)

    @property
    def git_dir(self) -> Path:
        return self.sandbox / "git"

    @property
    def out_dir(self) -> Path:
        return self.sandbox / "out"

    @property
    def dotgit(self) -> Path:
        return self.sandbox / "dotgit"

    @property
    def tasks_view(self) -> Path:
        return self.sandbox / "tasks"

    @property
    def bundle(self) -> Path:
        return self.out_dir / "run.bundle"

    @property
    def log(self) -> Path:
        return self.record / "run.log"

    @property
    def log_times(self) -> Path:
        """When the log's bytes were written: ``<offset> <unix time>`` lines, host-only."""
        return self.record / "run.log.times"

    @property
    def egress_log(self) -> Path:
        """The run's network decisions, moved here from the proxy's folder when it settles."""
        return self.record / "egress.jsonl"

    @property
    def harvested_bundle(self) -> Path:
        return self.record / "run.bundle"


@dataclass(frozen=True)
class PrivateGitSpec:
    branch: str
    base_sha: str
    base_branch: str | None
    object_format: str | None
    user_name: str
    user_email: str
    sparse_patterns: str | None = None  # git's cone patterns (launcher.core.sparse); None: everything
    # The repository's `shallow` file (a shallow clone's history ends at the commits it lists);
    # copied into the private git dir when it exists, or git there walks into missing parents.
    shallow_file: Path | None = None

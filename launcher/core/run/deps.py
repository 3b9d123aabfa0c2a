"""What a run needs from the outside: the adapters, and where this case root keeps things."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from launcher.core.egress import RunEgress
from launcher.core.ports import Coordinator, PoolSlotsPort, RepoPort, Sandbox, TaskFilesPort, WorkspacePort
from launcher.core.ports.case_state import CaseStatePort
from launcher.core.ports.harness import HarnessViewPort
from launcher.core.ports.images import ImageBuilderPort
from launcher.core.ports.marks import FolderMarksPort, NoMarks
from launcher.core.ports.publisher import PublisherPort
from launcher.core.ports.sidecars import SidecarPort
from launcher.core.ports.teardown import NoTeardownLocks, TeardownLocksPort
from launcher.core.ports.trust import TrustPort
from launcher.core.runlayout import RunPaths
from launcher.errors import LauncherError
from launcher.models import RunRecord, TaskRecord
from launcher.settings import NetworkSettings, PublishSettings, RunDefaults

if TYPE_CHECKING:
    from launcher.core.run.teardown import PendingTeardowns


def _inert(_step: str) -> None:
    return None


def _recorded_path(task: TaskRecord) -> str | None:
    return task.repo_path


@dataclass
class RunDeps:
    """The adapters a run is made with, and this case root's folders and settings."""

    store: Coordinator
    files: TaskFilesPort
    sandbox: Sandbox
    workspace: WorkspacePort
    open_repo: Callable[[str], RepoPort]
    root: Path
    state_dir: Path
    worktrees_dir: Path
    tasks_dir: Path
    defaults: RunDefaults
    entry_script: Path
    # What runs see of the harness at CASE_ROOT (a copy of its tracked files).
    harness: HarnessViewPort
    actor: str = "launcher"
    # projects.json as a run sees it (the task's repository pointing at the run's worktree).
    projects_view: Callable[[str, str], bytes | None] | None = None
    # Called before and after every step ("before:workspace", "after:start", …); tests
    # inject faults or kill the process there. Inert in normal use.
    checkpoint: Callable[[str], None] = _inert
    # Where a task's repository is on this machine (launcher/core/repos.py: projects.json,
    # [repos], the creator's path if it is the same repository, the clone cache), so a harness
    # checked out elsewhere (a CI runner, a build box) still finds its repositories.
    locate_repo: Callable[[TaskRecord], str | None] = _recorded_path
    network: NetworkSettings = field(default_factory=NetworkSettings)
    publish: PublishSettings = field(default_factory=PublishSettings)
    # How the host pushes a run's work ([publish], --push); None: this launcher publishes nothing.
    publisher: PublisherPort | None = None
    # Builds the images --devcontainer runs in; None: this launcher builds none.
    image_builder: ImageBuilderPort | None = None
    # None where no Docker engine backs the runs; then only --network none can run.
    egress: RunEgress | None = None
    # Reads the extra CA runs trust ([network] ca_file, --ca-file); None: runs trust their image's only.
    trust: TrustPort | None = None
    # Warm pool slots (`launcher pool warm`); None: every run is made from scratch.
    pool: PoolSlotsPort | None = None
    # Which worktree and sandbox folders launcher made: gc removes no other. NoMarks: none.
    marks: FolderMarksPort = field(default_factory=NoMarks)
    # Today's case (tasks in <repo>/.case/): the host's reads and writes of that state, case's
    # data dir on this host (its config.json seeds each run's), and a repository's projects.json
    # entry. None: tasks of that layout cannot run here.
    case_state: CaseStatePort | None = None
    # Port relays and sidecar services on the engine runs use; None: runs get neither.
    sidecars: SidecarPort | None = None
    case_data_dir: Path | None = None
    project_entry: Callable[[str], dict[str, Any] | None] | None = None
    # Held while a settled run is taken apart (launcher/core/run/teardown.py): gc and rm wait.
    teardown_locks: TeardownLocksPort = field(default_factory=NoTeardownLocks)
    # Where settle leaves teardowns for later (`launcher run`: a child after the result is
    # printed); None: settle does them at once.
    teardowns: PendingTeardowns | None = None

    def paths(self, run: RunRecord) -> RunPaths:
        return RunPaths.of(run.id, Path(run.worktree), self.state_dir)

    def tasks_view_mounted(self) -> bool:
        """Whether runs get their own writable copy of the harness's tasks/ (it is under the root)."""
        return self.tasks_dir.is_relative_to(self.root) and self.tasks_dir.is_dir()

    def recorded_repo(self, run: RunRecord) -> RepoPort | None:
        """The repository a run was made in, from its record; None when it moved or vanished."""
        if run.details.repo is None:
            return None
        try:
            return self.open_repo(run.details.repo)
        except LauncherError:
            return None

"""A live run's disk: its folders are host bind mounts, so nothing but launcher bounds them.

One run once filled the host's disk, and the next run died on it. A watcher looks at the run's
folders (worktree, private git dir, out/, task copy) every `[run] disk_check` seconds and stops
the run (SIGKILL: a disk fills faster than a grace period) when they hold more than `[run] disk`.
When the case root's disk has less than `[run] disk_reserve` left, only the biggest of this
root's live runs is stopped (each publishes its use in its record), so the one to blame goes and
the others keep room to finish. A writer faster than `disk_reserve / disk_check` can still
outrun the watcher: the reserve is the margin, size it for that.
"""

from __future__ import annotations

import contextlib
import threading
from pathlib import Path
from types import TracebackType

from launcher.core.run.deps import RunDeps
from launcher.core.runlayout import RunPaths
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import HostStorageError, LauncherError
from launcher.models.details import ExceededDetails

# A run's disk use reaches its record when it changed by this much (a write per look otherwise).
PUBLISH_STEP = 1024 * 1024


# On a small file system (a tmpfs root, a CI runner's scratch disk) the default reserve is at
# most this share of it, so 1 GiB does not refuse every run on a 2 GiB disk; a reserve set in
# launcher.toml is taken as it is.
RESERVE_SHARE = 20


def _folders(deps: RunDeps) -> list[Path]:
    folders = [deps.worktrees_dir if deps.worktrees_dir.exists() else deps.root, deps.state_dir]
    return [f for f in folders if f.exists()]


def free_space(deps: RunDeps) -> int:
    """The least free space of the file systems a run writes to (worktrees, launcher's state)."""
    return min(deps.workspace.free_space(f) for f in _folders(deps))


def reserve(deps: RunDeps) -> int:
    """`[run] disk_reserve` as set, else its default or a twentieth of the smallest disk if less."""
    if "disk_reserve" in deps.defaults.model_fields_set:
        return deps.defaults.disk_reserve
    smallest = min(deps.workspace.disk_size(f) for f in _folders(deps))
    return min(deps.defaults.disk_reserve, smallest // RESERVE_SHARE)


def check_room(deps: RunDeps) -> None:
    """Refuse to start a run on a disk that is already at its reserve."""
    free, kept = free_space(deps), reserve(deps)
    if free < kept:
        raise HostStorageError(
            f"the case root's disk has {free} bytes free, less than [run] disk_reserve ({kept})",
            hint="free space (`launcher gc --older-than 7d` prunes old runs' logs and bundles), or lower the reserve",
        )


class DiskWatch:
    """Watches one run's disk use while it lives; ``exceeded`` says why it was stopped, if it was."""

    def __init__(self, deps: RunDeps, run_id: str, paths: RunPaths, container_id: str) -> None:
        self.deps, self.run_id, self.paths, self.container_id = deps, run_id, paths, container_id
        self.exceeded: ExceededDetails | None = None
        self._published = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"disk-{run_id}", daemon=True)

    def __enter__(self) -> DiskWatch:
        self._thread.start()
        return self

    def __exit__(self, *_exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def look(self) -> ExceededDetails | None:
        """One look: the bound the run is past now, or None."""
        d, p = self.deps.defaults, self.paths
        used = self.deps.workspace.disk_usage([p.worktree, p.git_dir, p.out_dir, p.tasks_view])
        free = free_space(self.deps)
        self._publish(used)
        if used > d.disk:
            return ExceededDetails(bound="disk", limit=d.disk, used=used, free=free)
        kept = reserve(self.deps)
        if free < kept and used >= self._biggest_peer():
            return ExceededDetails(bound="reserve", limit=kept, used=used, free=free)
        return None

    def _publish(self, used: int) -> None:
        if abs(used - self._published) >= PUBLISH_STEP:
            self.deps.store.update_run(self.run_id, details={"disk_used": used})
            self._published = used

    def _biggest_peer(self) -> int:
        """The most any other live run of this root (on this disk) holds, as it last said."""
        peers = [
            run.details.disk_used or 0
            for run in self.deps.store.list_runs(states=LIVE_RUN_STATES)
            if run.id != self.run_id and Path(run.worktree).parent == self.paths.worktree.parent
        ]
        return max(peers, default=0)

    def _watch(self) -> None:
        while not self._stop.wait(self.deps.defaults.disk_check):
            try:
                exceeded = self.look()
            except (LauncherError, OSError):
                continue  # a folder removed under the walk, a disk briefly unreadable: look again
            if exceeded is None:
                continue
            self.exceeded = exceeded
            with contextlib.suppress(LauncherError):
                self.deps.sandbox.kill(self.container_id)
            with contextlib.suppress(LauncherError):
                self.deps.store.update_run(self.run_id, details={"exceeded": exceeded.model_dump(mode="json")})
            return

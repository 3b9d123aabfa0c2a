"""What a run sees at CASE_ROOT: the harness's tracked files, its own task copy, its projects view.

Never the case root itself: no other repository under it, no untracked or ignored file, no
`launcher.toml`, no `.git`, nothing of launcher's state. The host copies the tracked files
into the run's sandbox folder; that copy is mounted read-only, the run's own task files
(writable) and projects.json view over it.
"""

from __future__ import annotations

from pathlib import Path

from launcher.core.ports.harness import MountPoint
from launcher.core.run.deps import RunDeps
from launcher.core.runlayout import CONTAINER_CASE_ROOT, RunPaths
from launcher.models import MountSpec
from launcher.settings import CONFIG_NAME

PROJECTS_FILE = "projects.json"


def harness_mounts(deps: RunDeps, project: str, paths: RunPaths) -> list[MountSpec]:
    root = deps.root
    hidden = [_inside(root, folder) for folder in (deps.state_dir, deps.worktrees_dir, deps.tasks_dir)]
    hidden_prefixes = tuple(f"{rel}/" for rel in hidden if rel)

    def keep(path: str) -> bool:
        # launcher.toml may hold the coordinator's password; the task files are the run's own copy.
        return path != CONFIG_NAME and not path.startswith(hidden_prefixes)

    overlays: list[MountSpec] = []
    mount_points: dict[str, MountPoint] = {}
    view = deps.projects_view(project, "../workspace") if deps.projects_view else None
    if view is not None and (root / PROJECTS_FILE).is_file():
        # case's orchestrator finds the repository through projects.json: point it at the run.
        deps.workspace.write_file(paths.sandbox / PROJECTS_FILE, view)
        overlays.append(
            MountSpec(
                target=f"{CONTAINER_CASE_ROOT}/{PROJECTS_FILE}",
                source=str(paths.sandbox / PROJECTS_FILE),
                read_only=True,
            )
        )
        mount_points[PROJECTS_FILE] = "file"
    tasks = _inside(root, deps.tasks_dir)
    if deps.tasks_view_mounted() and tasks:
        # Only the run's own task files, writable, so case's scripts work on the run's copy.
        overlays.append(MountSpec(target=f"{CONTAINER_CASE_ROOT}/{tasks}", source=str(paths.tasks_view)))
        mount_points[tasks] = "dir"
    view_dir = paths.sandbox / "harness"
    deps.harness.export(view_dir, keep, mount_points)
    return [MountSpec(target=CONTAINER_CASE_ROOT, source=str(view_dir), read_only=True), *overlays]


def _inside(root: Path, folder: Path) -> str | None:
    """``folder`` relative to the root, or None when it is elsewhere (or the root itself)."""
    if folder == root or not folder.is_relative_to(root):
        return None
    return folder.relative_to(root).as_posix()

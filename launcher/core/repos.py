"""Which repository a task or a `--repo` value means on this machine.

A name from the harness's projects.json wins over a path, and over the absolute path a task
recorded when it was made, so a harness checked out elsewhere (a CI runner, a build box)
still finds its repositories.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from launcher.core.ports import RepoPort
from launcher.core.slugs import repo_prefix
from launcher.core.tasks import RepoRef
from launcher.models import TaskRecord


class ProjectsPort(Protocol):
    """case's projects.json: repository names and their paths."""

    @property
    def names(self) -> list[str]: ...

    def path_of(self, name: str) -> Path:
        """Raises NotFoundError listing the known names."""
        ...

    def name_of(self, path: Path) -> str | None: ...


class Repositories:
    def __init__(self, projects: ProjectsPort, open_repo: Callable[[str], RepoPort]) -> None:
        self.projects = projects
        self.open_repo = open_repo

    def resolve(self, value: str) -> RepoRef:
        """--repo: a name from projects.json, or a path (named after its projects.json entry if any)."""
        projects = self.projects
        if value in projects.names:
            repository = self.open_repo(str(projects.path_of(value)))
            return RepoRef(name=value, path=str(repository.toplevel))
        if projects.names and not Path(value).expanduser().exists() and "/" not in value:
            projects.path_of(value)  # raises NotFoundError listing the known names
        repository = self.open_repo(value)
        name = projects.name_of(repository.toplevel) or repo_prefix(repository.toplevel.name)
        return RepoRef(name=name, path=str(repository.toplevel))

    def locate(self, task: TaskRecord) -> str | None:
        if task.repo in self.projects.names:
            return str(self.projects.path_of(task.repo))
        return task.repo_path

    def check_base(self, repo: RepoRef, base_ref: str) -> None:
        """Refuse a task whose base does not resolve now (no commits yet, unknown ref)."""
        if repo.path is not None:
            self.open_repo(repo.path).resolve_commit(base_ref)

"""case's projects.json: repository names, their paths relative to the case root."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from launcher.errors import InvalidInputError, NotFoundError

PROJECTS_FILE = "projects.json"


class ProjectEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    path: str


class ProjectsFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    repos: list[ProjectEntry]


class Projects:
    def __init__(self, root: Path, data: ProjectsFile | None, raw: dict[str, Any] | None) -> None:
        self.root = root
        self.data = data
        self.raw = raw

    @classmethod
    def load(cls, root: Path) -> Projects:
        path = root / PROJECTS_FILE
        if not path.is_file():
            return cls(root, None, None)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(root, ProjectsFile.model_validate(raw), raw)
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InvalidInputError(f"{path} is not a valid case projects file: {str(exc).splitlines()[0]}") from exc

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.data.repos] if self.data else []

    def path_of(self, name: str) -> Path:
        for entry in self.data.repos if self.data else []:
            if entry.name == name:
                return (self.root / entry.path).resolve()
        known = ", ".join(self.names) or "none (no projects.json)"
        raise NotFoundError(f"no repository named {name!r} in {self.root / PROJECTS_FILE}", hint=f"known: {known}")

    def name_of(self, path: Path) -> str | None:
        resolved = path.resolve()
        for entry in self.data.repos if self.data else []:
            if (self.root / entry.path).resolve() == resolved:
                return entry.name
        return None

    def run_view(self, name: str, worktree_from_root: str) -> bytes | None:
        """projects.json as a run sees it: the task's repository points at the run's worktree."""
        if self.raw is None:
            return None
        view = json.loads(json.dumps(self.raw))
        for entry in view.get("repos", []):
            if isinstance(entry, dict) and entry.get("name") == name:
                entry["path"] = worktree_from_root
        return (json.dumps(view, indent=2) + "\n").encode()

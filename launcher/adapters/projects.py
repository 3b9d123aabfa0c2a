"""case's projects.json: repository names, their paths relative to the case root.

Two places, as case looks for them: today's case (30b1fa1) reads ``<data dir>/projects.json`` (the
file ``config.json``'s ``projects`` names) when the data dir holds a ``config.json``, and the
case checkout's own ``projects.json`` otherwise. Relative paths resolve against the case
checkout (the case root) in both; case's compiled binary alone resolves them against the file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from launcher.errors import InvalidInputError, NotFoundError

PROJECTS_FILE = "projects.json"
CONFIG_FILE = "config.json"
# Bigger than any real config.json or projects.json; a bound on what is read from the user's home.
CONFIG_MAX_BYTES = 1024 * 1024


def case_data_dir(configured: str | None, env: Mapping[str, str]) -> Path | None:
    """case's data dir, found as case finds it (src/paths.ts resolveDataDir); [case].data_dir first."""
    if configured:
        return Path(configured).expanduser()
    if env.get("CASE_DATA_DIR"):
        return Path(env["CASE_DATA_DIR"])
    if env.get("XDG_CONFIG_HOME"):
        return Path(env["XDG_CONFIG_HOME"]) / "case"
    if env.get("HOME"):
        return Path(env["HOME"]) / ".config" / "case"
    return None


def data_dir_projects(data_dir: Path | None) -> Path | None:
    """The projects.json today's case reads from its data dir, or None where it would not read one."""
    if data_dir is None:
        return None
    config_path = data_dir / CONFIG_FILE
    if not config_path.is_file():
        return None  # case reads the data dir's projects.json only beside a config.json
    named: Any = None
    try:
        if config_path.stat().st_size <= CONFIG_MAX_BYTES:
            named = json.loads(config_path.read_text(encoding="utf-8")).get("projects")
    except (OSError, ValueError, AttributeError):
        named = None  # case warns and takes its defaults for a broken config.json
    path = data_dir / (named if isinstance(named, str) and named else PROJECTS_FILE)
    return path if path.is_file() else None


class ProjectEntry(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str
    path: str


class ProjectsFile(BaseModel):
    model_config = ConfigDict(extra="allow")

    repos: list[ProjectEntry]


class Projects:
    def __init__(
        self, root: Path, data: ProjectsFile | None, raw: dict[str, Any] | None, source: Path | None = None
    ) -> None:
        self.root = root
        self.data = data
        self.raw = raw
        # Which file the repositories came from (the data dir's or the root's); None: neither.
        self.source = source

    @classmethod
    def load(cls, root: Path, data_dir: Path | None = None) -> Projects:
        path = data_dir_projects(data_dir) or root / PROJECTS_FILE
        if not path.is_file():
            return cls(root, None, None)
        try:
            if path.stat().st_size > CONFIG_MAX_BYTES:
                raise InvalidInputError(f"{path} is over {CONFIG_MAX_BYTES} bytes; not a case projects file")
            raw = json.loads(path.read_text(encoding="utf-8"))
            return cls(root, ProjectsFile.model_validate(raw), raw, source=path)
        except (json.JSONDecodeError, ValidationError) as exc:
            raise InvalidInputError(f"{path} is not a valid case projects file: {str(exc).splitlines()[0]}") from exc

    def entry(self, name: str) -> dict[str, Any] | None:
        """The repository's entry as the file has it (every field case knows kept)."""
        for entry in self.raw.get("repos", []) if self.raw else []:
            if isinstance(entry, dict) and entry.get("name") == name:
                return dict(entry)
        return None

    @property
    def names(self) -> list[str]:
        return [entry.name for entry in self.data.repos] if self.data else []

    def path_of(self, name: str) -> Path:
        for entry in self.data.repos if self.data else []:
            if entry.name == name:
                return (self.root / entry.path).resolve()
        known = ", ".join(self.names) or "none (no projects.json)"
        where = self.source or self.root / PROJECTS_FILE
        raise NotFoundError(f"no repository named {name!r} in {where}", hint=f"known: {known}")

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

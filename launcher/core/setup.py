"""Preparing a case root."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from launcher.errors import StateStoreError
from launcher.settings import DEFAULT_CONFIG_TEXT, Layout


class InitReport(BaseModel):
    root: str
    state_url: str
    created: list[str]


def initialise(layout: Layout) -> InitReport:
    """Folders, launcher.toml and a .gitignore for the state folder; the caller opens (and so
    creates and migrates) the state store itself."""
    created: list[str] = []
    for folder in (layout.state_dir, layout.tasks_dir / "active", layout.worktrees_dir, layout.runs_dir):
        if not folder.exists():
            try:
                folder.mkdir(parents=True)
            except OSError as exc:
                raise StateStoreError(f"cannot create {folder}: {exc.strerror or exc}") from exc
            created.append(str(folder))
    _write_once(layout.config_file, DEFAULT_CONFIG_TEXT, created)
    # launcher's own state never belongs in the harness's commits.
    _write_once(layout.state_dir / ".gitignore", "*\n", created)
    return InitReport(root=str(layout.root), state_url=layout.state_url(), created=created)


def _write_once(path: Path, text: str, created: list[str]) -> None:
    if path.exists():
        return
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise StateStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
    created.append(str(path))

"""Finding a case harness's task files on disk (both layouts)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from launcher.core.adopt import FoundFile
from launcher.core.case_layout import CASE_DIR
from launcher.core.transitions import CaseEra
from launcher.models import CaseLayoutFound

MAX_TASK_FILE = 4 * 1024 * 1024


def layouts_found(tasks_dir: Path, repo_paths: dict[str, Path]) -> list[CaseLayoutFound]:
    """Which layouts of case hold task files here: tasks/ under the root, and each repository's .case/."""
    found: list[CaseLayoutFound] = []
    harness = [d for d in (tasks_dir / "active", tasks_dir / "done") if d.is_dir()]
    count = sum(1 for d in harness for p in d.glob("*.task.json") if p.is_file())
    if count:
        found.append(CaseLayoutFound(era=CaseEra.HARNESS, where=[str(d) for d in harness], task_files=count))
    where, count, repos = [], 0, []
    for name, repo in sorted(repo_paths.items()):
        dirs = [repo / CASE_DIR / "tasks" / sub for sub in ("active", "done")]
        dirs = [d for d in dirs if d.is_dir()]
        if dirs:
            repos.append(name)
            where += [str(d) for d in dirs]
            count += sum(1 for d in dirs for p in d.glob("*.task.json") if p.is_file())
    if repos:
        found.append(CaseLayoutFound(era=CaseEra.REPO_LOCAL, where=where, task_files=count, repos=repos))
    return found


def task_dirs(tasks_dir: Path, repo_paths: list[Path]) -> list[Path]:
    """Harness-level tasks/active and tasks/done (March 2026), and repo-level .case/tasks/active."""
    dirs = [tasks_dir / "active", tasks_dir / "done"]
    dirs += [repo / ".case" / "tasks" / sub for repo in repo_paths for sub in ("active", "done")]
    return [d for d in dirs if d.is_dir()]


def scan(dirs: list[Path], known_paths: set[str] | None = None) -> tuple[list[FoundFile], list[Path]]:
    """Task files in ``dirs``; with ``known_paths``, only those not in it are read."""
    found: list[FoundFile] = []
    legacy: list[Path] = []
    for folder in dirs:
        names = {p.name for p in folder.iterdir()}
        for name in sorted(names):
            path = folder / name
            if name.startswith("."):
                continue
            if name.endswith(".task.json"):
                if known_paths is not None and str(path) in known_paths:
                    continue
                if not path.is_file() or path.stat().st_size > MAX_TASK_FILE:
                    continue
                data = path.read_bytes()
                found.append(FoundFile(path=str(path), sha256=hashlib.sha256(data).hexdigest(), data=data))
            elif name.endswith(".md") and name.removesuffix(".md") + ".task.json" not in names:
                legacy.append(path)
    return found, legacy


def read_md_title(md: Path) -> str | None:
    try:
        with open(md, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("# "):
                    return line[2:].strip()[:500] or None
    except OSError:
        return None
    return None

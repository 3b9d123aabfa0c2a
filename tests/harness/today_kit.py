"""A stand-in for today's case (workos/case at 30b1fa1) on disk, from the fixtures in
tests/fixtures/case_30b1fa1 (see its ORIGIN.md for which files are upstream's, byte for byte,
and which were written to follow upstream code).

``top/case``   the case checkout: package.json named "case", tasks/task.schema.json (upstream's)
``top/data``   case's data dir: config.json + projects.json naming ``cli`` at its absolute path
``top/cli``    the target repository, ``.case/`` git-ignored as ``ca bootstrap`` leaves it, with
               a task ``ca create`` made (a current-era ID), an older task of the same repository,
               the task's markers, plan and event log, a run-log and ``.case/active``

The case root's launcher.toml names the data dir ([case] data_dir), as a user would.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import git, make_repo
from jsonschema import Draft202012Validator

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "case_30b1fa1"
SCHEMA = FIXTURES / "task.schema.json"
CREATED_ID = "cli-mncbvowg-fix-broken-test"
OLDER_ID = "cli-1-auto-env-after-login"


@dataclass(frozen=True)
class Today:
    root: Path
    data: Path
    repo: Path

    @property
    def case_dir(self) -> Path:
        return self.repo / ".case"

    def task_file(self, task_id: str) -> Path:
        return self.case_dir / "tasks" / "active" / f"{task_id}.task.json"

    def digests(self) -> dict[str, str]:
        """Every file under the repository's .case/, by path: to show what changed and what did not."""
        return {
            str(p.relative_to(self.case_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(self.case_dir.rglob("*"))
            if p.is_file()
        }


def schema_errors(doc: dict[str, Any]) -> list[str]:
    """What upstream's task.schema.json (additionalProperties: false) has against ``doc``."""
    schema = json.loads(SCHEMA.read_text())
    return [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(doc)]


def build_today(top: Path) -> Today:
    repo = make_repo(top / "cli", {"README.md": "# cli\n", "src/cli.py": "print('cli')\n", ".gitignore": ".case/\n"})
    formats = FIXTURES / "constructed" / "formats" / "repo" / ".case"
    created = FIXTURES / "constructed" / "after-create" / "repo" / ".case"
    case_dir = repo / ".case"
    shutil.copytree(created, case_dir)
    for name in ("plan.json", "tested", "reviewed", "events"):
        source = formats / CREATED_ID / name
        target = case_dir / CREATED_ID / name
        if source.is_dir():
            shutil.copytree(source, target)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    shutil.copyfile(formats / "run-log.jsonl", case_dir / "run-log.jsonl")
    older = FIXTURES / "upstream" / "tasks" / "active"
    for suffix in (".task.json", ".md"):
        shutil.copyfile(older / f"{OLDER_ID}{suffix}", case_dir / "tasks" / "active" / f"{OLDER_ID}{suffix}")

    data = top / "data"
    data.mkdir()
    (data / "config.json").write_text(json.dumps({"version": 1, "projects": "./projects.json"}, indent=2) + "\n")
    entry = {
        "name": "cli",
        "path": str(repo),
        "remote": "git@github.com:workos/cli.git",
        "description": "the cli",
        "language": "typescript",
        "packageManager": "pnpm",
        "commands": {"setup": "pnpm install", "test": "pnpm test"},
    }
    (data / "projects.json").write_text(json.dumps({"repos": [entry]}, indent=2) + "\n")

    root = top / "case"
    (root / "tasks").mkdir(parents=True)
    shutil.copyfile(SCHEMA, root / "tasks" / "task.schema.json")
    (root / "package.json").write_text(json.dumps({"name": "case", "private": True}) + "\n")
    (root / "AGENTS.md").write_text("Run `ca` from the target repository.\n")
    (root / ".gitignore").write_text("tasks/active/\n")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "case at 30b1fa1 (stand-in)", cwd=root)
    # After the commit: launcher.toml is the user's, not the harness's.
    (root / "launcher.toml").write_text(f'[case]\ndata_dir = "{data}"\n')
    return Today(root=root, data=data, repo=repo)

"""A task made in one case root runs in another that has no checkout of its repository.

As a CI job in a fresh clone of the harness would: one shared coordinator, the creator's
checkout gone, and only the task's remote URL (a local bare repository stands in for the
forge) or launcher.toml's `[repos]` saying where the repository is. The second root clones
it into its clone cache, and the agent's commit lands on the run's branch there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from runkit import Case, git, make_repo

pytestmark = [pytest.mark.docker, pytest.mark.slow]

AGENT = 'echo "from the agent" > AGENT.txt && git add AGENT.txt && git commit -q -m "agent commit" && echo FACT=ok'


def _bare(source: Path, at: Path) -> Path:
    git("clone", "-q", "--bare", str(source), str(at), cwd=source.parent)
    return at


def _second_root(launcher_roots: list[Path], tmp_path: Path) -> Case:
    root = tmp_path / "ci-job"
    root.mkdir()
    launcher_roots.append(root.resolve())
    return Case(root.resolve())


def _json(case: Case, env: dict[str, str], *args: str) -> Any:
    cut = args.index("--") if "--" in args else len(args)
    return json.loads(case.ok(*args[:cut], "--json", *args[cut:], env=env).stdout)


def _only_clone(root: Path) -> Path:
    (clone,) = (root / ".launcher" / "clones").iterdir()
    return clone


def _subjects(clone: Path, ref: str) -> list[str]:
    return git(f"--git-dir={clone / '.git'}", "log", "--format=%s", ref, cwd=clone.parent).split("\n")[:2]


def test_a_task_runs_elsewhere_from_its_remote_url(case: Case, launcher_roots: list[Path], tmp_path: Path) -> None:
    remote = _bare(make_repo(tmp_path / "source"), tmp_path / "forge" / "api.git")
    creator = tmp_path / "laptop" / "api"
    creator.parent.mkdir()
    git("clone", "-q", str(remote), str(creator), cwd=tmp_path)
    shared = {"LAUNCHER_STATE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    task = _json(case, shared, "task", "create", "--repo", str(creator), "--title", "Portable", "--", "sh", "-c", AGENT)
    assert (task["repo_path"], task["repo_url"]) == (str(creator), str(remote))
    creator.rename(tmp_path / "laptop" / "moved-away")  # the creator's path means nothing here

    job = _second_root(launcher_roots, tmp_path)
    result = job.cli("run", task["id"], "--network", "none", env=shared)

    assert result.exit_code == 0, result.stderr
    assert "FACT=ok" in result.stdout
    clone = _only_clone(job.root)
    assert _subjects(clone, f"launcher/{task['id']}/1") == ["agent commit", "initial commit"]
    assert git(f"--git-dir={clone / '.git'}", "config", "remote.origin.url", cwd=tmp_path).strip() == str(remote)
    # The forge got nothing from the run: publishing is the host's, and was not asked for.
    assert git("for-each-ref", "refs/heads/launcher", cwd=remote) == ""


def test_repos_in_launcher_toml_resolves_a_task_without_a_remote(
    case: Case, launcher_roots: list[Path], tmp_path: Path
) -> None:
    creator = make_repo(tmp_path / "laptop" / "demo")  # no remote: the task records none
    mirror = _bare(creator, tmp_path / "mirror" / "demo.git")
    shared = {"LAUNCHER_STATE_URL": f"sqlite:///{tmp_path / 'shared.db'}"}
    task = _json(case, shared, "task", "create", "--repo", str(creator), "--title", "Mapped", "--", "sh", "-c", AGENT)
    assert task["repo_url"] is None
    creator.rename(tmp_path / "laptop" / "moved-away")
    job = _second_root(launcher_roots, tmp_path)

    unresolved = job.cli("run", task["id"], "--network", "none", env=shared)
    assert unresolved.exit_code == 5, unresolved.stderr
    assert f"task {task['id']}: its repository 'demo' is not on this machine" in unresolved.stderr
    assert '[repos] demo = "PATH or URL"' in unresolved.stderr

    (job.root / "launcher.toml").write_text(f'[repos]\ndemo = "file://{mirror}"\n')
    result = job.cli("run", task["id"], "--network", "none", env=shared)

    assert result.exit_code == 0, result.stderr
    assert _subjects(_only_clone(job.root), f"launcher/{task['id']}/1") == ["agent commit", "initial commit"]

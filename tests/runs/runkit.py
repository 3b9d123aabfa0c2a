"""Shared machinery for the Docker + git integration tests of isolated runs.

Used by ``tests/runs`` and ``tests/security`` (each conftest re-exports the fixtures). Runs go
through the real CLI in separate processes (``python -m launcher``), against the real Docker
engine and real git: nothing here is mocked.

The promise checked after every test: launcher leaves no container behind. Every container
labelled ``launcher.root=<the test's case root>`` is listed *before* anything is cleaned; the
test fails if there was one, and all of them are removed either way. Nothing without that
exact label is ever touched.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    CliResult,
    containers_of,
    ensure_agent_image,
    git,
    launcher_command,
    make_repo,
    release_root,
    repo_git,
    wait_for,
    wait_teardowns,
)
from helpers import clean_env as cli_env

__all__ = ["CliResult", "git", "make_repo"]

TESTS_DIR = Path(__file__).resolve().parents[1]


# -- Docker -------------------------------------------------------------------------------


# -- a case root driven through the CLI ------------------------------------------------------


@dataclass
class Case:
    """One case root, driven through ``python -m launcher --root ROOT …`` subprocesses."""

    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def argv(self, *args: str) -> list[str]:
        return [*launcher_command(), "--root", str(self.root), *args]

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180, settled: bool = True) -> Any:
        """``launcher ARGS``; with ``settled``, once its runs' deferred teardowns are done too (what
        a test checks next is what the run leaves behind, not its removal half done)."""
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=cli_env(env), check=False
        )
        if settled:
            wait_teardowns(self.root)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> Any:
        result = self.cli(*args, env=env, timeout=timeout)
        assert result.exit_code == 0, (
            f"launcher {' '.join(args)} -> {result.exit_code}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def json(self, *args: str) -> Any:
        """``launcher ARGS --json`` parsed (``--json`` goes before a ``--`` that starts a command)."""
        cut = args.index("--") if "--" in args else len(args)
        return json.loads(self.ok(*args[:cut], "--json", *args[cut:]).stdout)

    def popen(
        self,
        *args: str,
        stdout: Any = subprocess.DEVNULL,
        stderr: Any = subprocess.DEVNULL,
        env: dict[str, str] | None = None,
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(self.argv(*args), stdout=stdout, stderr=stderr, env=cli_env(env))
        self.procs.append(proc)
        return proc

    def run_of(self, task_id: str) -> str:
        """The ID of the task's newest run."""
        found = [r["id"] for r in self.runs() if r["task_id"] == task_id]
        assert found, f"task {task_id} has no run"
        return str(found[-1])

    def wait_running(self, task_id: str, timeout: float = 120) -> str:
        """Poll until the task has a run in state `running`; its ID."""
        running = wait_for(
            lambda: [r["id"] for r in self.runs(live_only=True) if r["task_id"] == task_id and r["state"] == "running"],
            timeout=timeout,
            what=f"a running run of {task_id}",
        )
        return str(running[0])

    def create_task(self, repo: Path, title: str, *options: str) -> str:
        return str(self.json("task", "create", "--repo", str(repo), "--title", title, *options)["id"])

    def runs(self, *, live_only: bool = False) -> list[dict[str, Any]]:
        return list(self.json("ps") if live_only else self.json("ps", "--all"))

    def run_record(self, run_id: str) -> dict[str, Any]:
        found = [r for r in self.runs() if r["id"] == run_id]
        assert len(found) == 1, f"no run {run_id} in `ps --all`"
        return found[0]

    def containers(self) -> list[Any]:
        return containers_of(self.root)

    def kill_strays(self) -> None:
        """Kill (and reap) every launcher process this test started that is still alive."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def run_id_of(stderr: str) -> str:
    """The run ID from a foreground run's first stderr line (`launcher: run ID on branch …`)."""
    for line in stderr.splitlines():
        parts = line.split()
        if line.startswith("launcher: run ") and len(parts) >= 5 and parts[3:5] == ["on", "branch"]:
            return parts[2]
    raise AssertionError(f"no run ID announced on stderr:\n{stderr}")


def facts(output: str) -> dict[str, str]:
    """``FACT name=value`` lines printed by an agent, as a dict."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("FACT "):
            name, _, value = line[5:].partition("=")
            found[name] = value
    return found


# -- repositories -----------------------------------------------------------------------


def head_of(repo: Path, ref: str = "HEAD") -> str:
    return repo_git(repo, "rev-parse", "--verify", f"{ref}^{{commit}}").strip()


def branches(repo: Path, prefix: str = "refs/heads/launcher/") -> list[str]:
    out = repo_git(repo, "for-each-ref", "--format=%(refname)", prefix)
    return [line.removeprefix("refs/heads/") for line in out.splitlines() if line]


def worktree_paths(repo: Path) -> list[str]:
    out = repo_git(repo, "worktree", "list", "--porcelain")
    return [line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")]


def tree_snapshot(top: Path) -> dict[str, bytes]:
    """Every file under ``top`` except .git, with its bytes (symlinks as their target)."""
    snap: dict[str, bytes] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) == top and d == ".git")]
        for name in filenames:
            path = Path(dirpath, name)
            rel = str(path.relative_to(top))
            snap[rel] = os.readlink(path).encode() if path.is_symlink() else path.read_bytes()
    return snap


# -- fixtures (re-exported by the conftests of tests/runs and tests/security) -----------


@pytest.fixture(scope="session")
def agent_image() -> str:
    """The agent image, built once per session (a no-op when its content hash is unchanged)."""
    return ensure_agent_image()


@pytest.fixture
def launcher_roots(agent_image: str, case_root: Path) -> Iterator[list[Path]]:
    """Case roots whose containers must all be gone when the test ends (append more to it)."""
    roots = [case_root.resolve()]
    yield roots
    leftovers = [item for root in roots for item in release_root(root)]
    assert not leftovers, f"launcher left containers or networks behind: {leftovers}"


@pytest.fixture
def case(launcher_roots: list[Path]) -> Iterator[Case]:
    """The test's case root, driven through the CLI; launcher processes left alive are killed."""
    driver = Case(launcher_roots[0])
    try:
        yield driver
    finally:
        driver.kill_strays()


@pytest.fixture
def shared_dir(launcher_roots: list[Path]) -> Iterator[Path]:
    """A folder every uid can traverse (pytest's own tmp folders are root-only, 0700).

    For repositories owned by an unprivileged user: launcher runs their git as that user,
    who must reach both the repository and the case root's worktrees folder.
    """
    top = Path(tempfile.mkdtemp(prefix="launcher-runs-", dir="/tmp")).resolve()
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)

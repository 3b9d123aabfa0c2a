"""Fixtures for the batch and matrix tests: a case root with one repository, driven through the CLI.

Everything is real: the CLI runs in separate processes (``python -m launcher``), agents run in
containers of the locally built agent image, git is git, and the coordinator is SQLite under the
case root or a fresh database on the session's throwaway PostgreSQL server (``tests/pg.py``).

Cleanup promise: after every test, every container labelled ``launcher.root=<the test's case
root>`` is listed, then removed; the test fails if launcher left one behind. Nothing without that
exact label is touched. Launcher processes a test started and left alive are killed.
"""

from __future__ import annotations

import json
import signal
import subprocess
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env, containers_of, ensure_agent_image, launcher_command, release_root, wait_for
from helpers import make_repo as _make_repo
from helpers import repo_git as git
from pg import PgServer, pg_server

from launcher.adapters.store import open_coordinator, sqlite_url
from launcher.core.ports import Coordinator

__all__ = ["Bench", "agent_image", "bench", "pg_server", "state_backend"]


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def agent_command(index: int, *, exit_code: int = 0, sleep: float = 0) -> list[str]:
    """An agent that commits ``task-<index>.txt`` (after ``sleep`` seconds) and exits ``exit_code``."""
    script = (
        (f"sleep {sleep}; " if sleep else "")
        + f'echo "task {index} by $CASE_RUN_ID" > task-{index}.txt && git add task-{index}.txt '
        + f'&& git commit -q -m "task {index}" && exit {exit_code}'
    )
    return ["sh", "-c", script]


@dataclass
class Bench:
    """One case root (with one repository under it) and one coordinator, driven through the CLI."""

    root: Path
    repo: Path
    state_url: str
    backend: str
    procs: list[subprocess.Popen[str]] = field(default_factory=list)

    # Helpers the test modules reach through the fixture (importing ``conftest`` by name is unreliable).
    agent_command = staticmethod(agent_command)
    wait_for = staticmethod(wait_for)

    # -- the CLI ------------------------------------------------------------------------

    def argv(self, *args: str) -> list[str]:
        return [*launcher_command(), "--root", str(self.root), "--state-url", self.state_url, *args]

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        return clean_env(extra)

    def cli(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        proc = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env(env), check=False
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> Result:
        result = self.cli(*args, env=env, timeout=timeout)
        assert result.exit_code == 0, (
            f"launcher {' '.join(args)} -> {result.exit_code}\n{result.stdout}\n{result.stderr}"
        )
        return result

    def popen(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env(env)
        )
        self.procs.append(proc)
        return proc

    @staticmethod
    def finish(proc: subprocess.Popen[str], timeout: float) -> Result:
        """Wait for a process started with ``popen`` (reading its pipes) and return what it said."""
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # launcher prints every thread's stack: what it waits for
            try:
                out, err = proc.communicate(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate(timeout=30)
            pytest.fail(f"{proc.args} still running after {timeout:.0f}s:\n{out}\n{err[-8000:]}")
        return Result(proc.returncode, out, err)

    def kill_strays(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)

    # -- tasks and runs -----------------------------------------------------------------

    def create_task(self, title: str, command: list[str], *, queue: bool = True) -> dict[str, Any]:
        args = ["task", "create", "--repo", str(self.repo), "--title", title, "--json"]
        if queue:
            args.append("--queue")
        return dict(self.ok(*args, "--", *command).json())

    def create_tasks(self, specs: list[tuple[str, list[str]]], *, queue: bool = True) -> list[dict[str, Any]]:
        """Create tasks in order, a few processes at a time (each ``task create`` is its own process)."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=4) as pool:
            created = list(pool.map(lambda spec: self.create_task(spec[0], spec[1], queue=queue), specs))
        return created

    def runs(self) -> list[dict[str, Any]]:
        return list(self.ok("ps", "--all", "--json").json())

    def runs_by_task(self) -> dict[str, list[dict[str, Any]]]:
        found: dict[str, list[dict[str, Any]]] = {}
        for run in self.runs():
            found.setdefault(run["task_id"], []).append(run)
        return found

    def state_counts(self) -> Counter[str]:
        return Counter(run["state"] for run in self.runs())

    def matrix(self, *args: str) -> dict[str, Any]:
        return dict(self.ok("matrix", *args).json())

    @contextmanager
    def store(self) -> Iterator[Coordinator]:
        """The coordinator itself, through launcher's Python API (for polling and for simulated crashes)."""
        coordinator = open_coordinator(self.state_url)
        try:
            yield coordinator
        finally:
            coordinator.close()

    # -- the repository -------------------------------------------------------------------

    def branches(self) -> list[str]:
        out = git(self.repo, "for-each-ref", "--format=%(refname)", "refs/heads/launcher/")
        return [line.removeprefix("refs/heads/") for line in out.splitlines() if line]

    def show(self, ref: str, path: str) -> str:
        return git(self.repo, "show", f"{ref}:{path}")

    def worktrees(self) -> list[str]:
        out = git(self.repo, "worktree", "list", "--porcelain")
        return [line.removeprefix("worktree ") for line in out.splitlines() if line.startswith("worktree ")]

    def containers(self) -> list[Any]:
        return containers_of(self.root)


@pytest.fixture(scope="session")
def agent_image() -> str:
    """The agent image, built once per session (a no-op when its content hash is unchanged)."""
    return ensure_agent_image()


@pytest.fixture
def state_backend(request: pytest.FixtureRequest) -> str:
    """The coordinator backend: ``sqlite``, unless a test parametrises it (indirectly) with ``postgres``."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def bench(request: pytest.FixtureRequest, tmp_path: Path, state_backend: str) -> Iterator[Bench]:
    """A fresh case root and repository; tests marked ``docker`` also get the agent image and the container check."""
    uses_docker = request.node.get_closest_marker("docker") is not None
    if uses_docker:
        request.getfixturevalue("agent_image")
    root = (tmp_path / "case").resolve()
    root.mkdir()
    repo = make_repo(root / "repos" / "demo")
    with _state_url(request, state_backend, root) as url:
        driver = Bench(root=root, repo=repo, state_url=url, backend=state_backend)
        try:
            yield driver
        finally:
            driver.kill_strays()
            if not uses_docker:
                return
            leftovers = release_root(root)
            assert not leftovers, f"launcher left containers or networks behind: {leftovers}"


@contextmanager
def _state_url(request: pytest.FixtureRequest, backend: str, root: Path) -> Iterator[str]:
    if backend == "sqlite":
        yield sqlite_url(root / ".launcher" / "state.db")
        return
    assert backend == "postgres", backend
    server: PgServer = request.getfixturevalue("pg_server")
    with server.database() as url:
        yield url


def make_repo(path: Path) -> Path:
    """A repository with one commit on main, where batch agents commit their files."""
    return _make_repo(path, {"README.md": "# batch demo\n"})

"""Helpers shared by every suite: real git repositories and the CLI, in-process or as a subprocess.

Import them as `from helpers import …` (never `from conftest import …`: with several
conftest.py files, which one `conftest` names depends on the order pytest collected them).
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="Test Author",
        GIT_AUTHOR_EMAIL="author@example.invalid",
        GIT_COMMITTER_NAME="Test Author",
        GIT_COMMITTER_EMAIL="author@example.invalid",
    )
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def make_repo(path: Path, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git("init", "-q", "-b", "main", cwd=path)
    for name, text in (files or {"README.md": "# demo\n", "src/app.py": "print('hello')\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial commit", cwd=path)
    return path


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def invoke(args: list[str]) -> CliResult:
    """Run the CLI in this process through its real entry point (error boundary included)."""
    from launcher.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(args)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return CliResult(code, out.getvalue(), err.getvalue())


def launcher_command() -> list[str]:
    """How tests start launcher as its own process: ``python -m launcher``; with
    ``LAUNCHER_TEST_VIA=script``, the console script instead (with LAUNCHER_SERVICE=on in the
    environment, that puts the suite's commands through the launch service)."""
    if os.environ.get("LAUNCHER_TEST_VIA") == "script":
        script = Path(sys.executable).with_name("launcher")
        assert script.exists(), f"LAUNCHER_TEST_VIA=script: no console script at {script}"
        return [str(script)]
    return [sys.executable, "-m", "launcher"]


def run_cli(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300) -> CliResult:
    """Run the CLI as a separate process, as a user or a CI job would."""
    proc = subprocess.run(
        [*launcher_command(), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


# -- shared by the Docker suites (runs, security, faults, harness, batch, stack) -------------

AGENT_IMAGE = "launcher/agent-base:latest"
NO_DOCKER = "this machine has no reachable Docker engine"
T = TypeVar("T")


def clean_env(extra: dict[str, str] | None = None, *, drop: tuple[str, ...] = ()) -> dict[str, str]:
    """This environment without anything that would pick another root, store or git dir (the
    launch service's settings stay: they change how launcher starts, not what it does)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GIT_", "CASE_", "LAUNCHER_", *drop)) or k in ("LAUNCHER_SERVICE", "LAUNCHER_SERVICE_IDLE")
    }
    env.update(extra or {})
    return env


def wait_for(condition: Callable[[], T], *, timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def docker_reachable() -> bool:
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, timeout=60, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


def docker_client() -> Any:
    import docker

    return docker.from_env(timeout=120)


def wait_teardowns(root: Path, timeout: float = 180.0) -> None:
    """Wait until no run of ``root`` is being taken apart: `launcher run` returns its result
    first and removes the run's container, network and folders from a child process after
    ([run] defer_teardown). What is left once they are done is left for good."""
    from launcher.adapters.teardown_locks import TeardownLocks

    still = TeardownLocks(root / ".launcher" / "teardown").wait(timeout)
    assert not still, f"teardown of {still} still going after {timeout:.0f}s"


def containers_of(root: Path, *, include_proxy: bool = False) -> list[Any]:
    """Every container (running or not) that carries ``launcher.root=<root>``, once the root's
    runs being taken apart are done.

    The root's egress proxy is left out unless asked for: it outlives runs by design, until
    `launcher gc` finds no run network left for it.
    """
    wait_teardowns(root)
    client = docker_client()
    try:
        found = client.containers.list(all=True, filters={"label": f"launcher.root={root}"})
        return [c for c in found if include_proxy or c.labels.get("launcher.kind") != "egress-proxy"]
    finally:
        client.close()


def networks_of(root: Path) -> list[Any]:
    """Every Docker network that carries ``launcher.root=<root>`` (runs' own networks), once the
    root's runs being taken apart are done."""
    wait_teardowns(root)
    client = docker_client()
    try:
        return list(client.networks.list(filters={"label": f"launcher.root={root}"}))
    finally:
        client.close()


def release_root(root: Path) -> list[str]:
    """Remove everything launcher made on the engine for ``root``; what was left behind.

    Run containers and run networks still present are reported (launcher must remove them
    when runs end); the egress proxy is removed silently (it lives until `launcher gc`).
    """
    leftovers = []
    for container in containers_of(root, include_proxy=True):
        if container.labels.get("launcher.kind") != "egress-proxy":
            leftovers.append(f"container {container.name} ({container.status}, labels {container.labels})")
        container.remove(force=True)
    for network in networks_of(root):
        leftovers.append(f"network {network.name} (labels {network.attrs.get('Labels')})")
        network.reload()
        for member in network.attrs.get("Containers") or {}:
            network.disconnect(member, force=True)
        network.remove()
    return leftovers


def repo_git(repo: Path, *args: str) -> str:
    """git in a repository the test made, whoever owns it (safe.directory for this path only)."""
    return git("-c", f"safe.directory={repo}", *args, cwd=repo)


def ensure_agent_image() -> str:
    """`launcher image build` of the agent image and the egress proxy (no-ops when their content
    hashes are unchanged); skip without Docker."""
    if not docker_reachable():
        pytest.skip(NO_DOCKER)
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "image", "build", "agent-base", "egress-proxy"],
        capture_output=True,
        text=True,
        timeout=1800,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, f"`launcher image build agent-base egress-proxy` failed:\n{proc.stdout}\n{proc.stderr}"
    return AGENT_IMAGE

"""The launch service for tests: one started on the test's own runtime folder (stopped when the
test ends), the console script run with it, and how to tell a served command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import clean_env, wait_for

SCRIPT = shutil.which("launcher", path=str(Path(sys.executable).parent))


class Service:
    """A launch service for the test's own runtime folder, stopped when the test ends."""

    def __init__(self, runtime: Path) -> None:
        self.runtime = runtime
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def folder(self) -> Path:
        return self.runtime / "launcher"

    def env(self, mode: str = "verbose", **extra: str) -> dict[str, str]:
        return clean_env({"XDG_RUNTIME_DIR": str(self.runtime), "LAUNCHER_SERVICE": mode, **extra})

    def sockets(self) -> list[Path]:
        return sorted(self.folder.glob("launch-*.sock")) if self.folder.is_dir() else []

    def start(self, idle: float = 120) -> Path:
        """Started as the console script starts it, on the socket it would use."""
        self.folder.mkdir(mode=0o700, exist_ok=True)
        code = (
            "import os; from launcher.service import place; "
            "print(place.socket_path(place.folder(), place.fingerprint(context=place.caller_context(os.environ))))"
        )
        path = Path(
            subprocess.run(
                [sys.executable, "-c", code], env=self.env(), capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        self.proc = subprocess.Popen([sys.executable, "-m", "launcher.service", str(path), str(idle)], env=self.env())
        wait_for(path.is_socket, timeout=60, what="the launch service's socket")
        return path

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def launch_service(tmp_path: Path) -> Iterator[Service]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    started = Service(runtime)
    try:
        yield started
    finally:
        started.stop()


def launcher(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert SCRIPT is not None
    return subprocess.run([SCRIPT, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def served_pid(stderr: str) -> int | None:
    for line in stderr.splitlines():
        if line.startswith("launcher: served by the launch service (pid "):
            return int(line.rsplit(" ", 1)[1].rstrip(")"))
    return None


def without_served_line(stderr: str) -> str:
    return "".join(line for line in stderr.splitlines(keepends=True) if not line.startswith("launcher: served by"))

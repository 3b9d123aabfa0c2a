"""launcher's own process skips the interpreter's teardown, but never what a profiler or an exit
handler still has to write."""

from __future__ import annotations

import pstats
import subprocess
import sys
from pathlib import Path


def _launcher(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120, check=False)


def test_a_profiled_launcher_writes_its_profile(tmp_path: Path) -> None:
    out = tmp_path / "launcher.prof"
    done = _launcher("-m", "cProfile", "-o", str(out), "-m", "launcher", "--version")
    assert done.returncode == 0, done.stderr
    assert out.exists(), "the profile is written after launcher returns"
    assert pstats.Stats(str(out)).total_calls > 0  # type: ignore[attr-defined]


def test_exit_handlers_run_and_the_status_is_launchers(tmp_path: Path) -> None:
    marker = tmp_path / "atexit-ran"
    code = (
        "import atexit, pathlib, sys\n"
        f"atexit.register(pathlib.Path({str(marker)!r}).write_text, 'yes')\n"
        "sys.argv = ['launcher', 'nope-command']\n"
        "from launcher.cli import main\n"
        "main()\n"
    )
    done = _launcher("-c", code)
    assert done.returncode == 2, done.stderr
    assert marker.read_text() == "yes"
    assert "No such command" in done.stderr

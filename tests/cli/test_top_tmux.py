"""`launcher top` on a real terminal: tmux runs it beside two live runs, keys go in with
send-keys, what it draws comes out with capture-pane.

The agents wait (in their containers) for a file in their worktree, so they live exactly as
long as the test needs them: one is stopped from top, the other is let go with `launcher exec`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import CliResult, clean_env, ensure_agent_image, release_root, run_cli, wait_for

pytestmark = [
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="this machine has no tmux (Debian: tmux)"),
]

WAITS = 'echo "started $CASE_TASK_ID"; while [ ! -f go.txt ]; do sleep 0.2; done; echo done'


def cells(screen: str, run_id: str) -> list[str]:
    """The table row of ``run_id`` split into its cells (the selection mark dropped)."""
    for line in screen.splitlines():
        words = line.split()
        if run_id in words[:2]:
            return words[words.index(run_id) :]
    return []


def test_top_shows_two_live_runs_and_stops_one_from_the_keyboard(git_repo: Path, case_root: Path) -> None:
    ensure_agent_image()
    root = case_root.resolve()
    env = clean_env()

    def cli(*args: str) -> CliResult:
        return run_cli(["--root", str(root), *args], env=env, timeout=240)

    server = f"launcher-test-{uuid.uuid4().hex[:8]}"  # a tmux server of its own: no one else's session

    def tmux(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-L", server, *args], capture_output=True, text=True, check=False)

    def screen() -> str:
        return tmux("capture-pane", "-p", "-t", "top").stdout

    try:
        ids = []
        for name in ("a", "b"):
            started = cli(
                "run", "-d", "--repo", str(git_repo), "--title", f"Top {name}", "--network", "none",
                "--", "sh", "-c", WAITS,
            )  # fmt: skip
            assert started.exit_code == 0, started.stderr
            ids.append(started.stdout.strip())
        first, second = ids

        def both_running() -> bool:
            runs = {r["id"]: r["state"] for r in json.loads(cli("ps", "--json").stdout)}
            return all(runs.get(i) == "running" for i in ids)

        wait_for(both_running, timeout=180, what="both runs running")

        passed = {k: v for k, v in env.items() if k in ("PATH", "HOME", "DOCKER_HOST", "LANG", "LC_ALL")}
        command = shlex.join(
            ["env", "-i", *(f"{k}={v}" for k, v in passed.items()), "TERM=xterm-256color",
             sys.executable, "-m", "launcher", "--root", str(root), "top", "--interval", "0.5"]
        )  # fmt: skip
        made = tmux("new-session", "-d", "-s", "top", "-x", "200", "-y", "50", command)
        assert made.returncode == 0, made.stderr

        def figures_for_both() -> str | None:
            shown = screen()
            rows = [cells(shown, run_id) for run_id in ids]
            # RUN TASK STATE AGE CPU MEM …: running, a CPU share and a memory size from the engine.
            ok = all(len(r) > 5 and r[2] == "running" and r[4].endswith("%") and r[5].endswith("B") for r in rows)
            return shown if ok else None

        shown = wait_for(figures_for_both, timeout=60, what="top drawing both runs with CPU and memory")
        assert "launcher top" in shown
        assert "2 live" in shown
        assert all(header in shown for header in ("COMMITS", "DENIED", "LAST"))
        assert all(f"started {cells(shown, i)[1]}" in shown for i in ids), shown  # each run's last line
        assert any(line.split()[:2] == [">", first] for line in shown.splitlines()), shown  # first is selected

        tmux("send-keys", "-t", "top", "s")
        wait_for(lambda: f"stop {first}? y to confirm" in screen(), timeout=30, what="the stop confirmation")
        tmux("send-keys", "-t", "top", "y")

        def first_cancelled() -> str | None:
            shown = screen()
            return shown if cells(shown, first)[2:3] == ["cancelled"] else None

        cancelled = wait_for(first_cancelled, timeout=120, what=f"top showing {first} cancelled")
        assert cells(cancelled, second)[2] == "running", cancelled
        assert "1 live, 2 shown" in cancelled

        tmux("send-keys", "-t", "top", "q")
        wait_for(lambda: tmux("has-session", "-t", "top").returncode != 0, timeout=30, what="top to quit on q")

        assert cli("exec", second, "--", "touch", "go.txt").exit_code == 0
        waited = cli("wait", "--timeout", "120", first, second)
        assert waited.stdout.splitlines() == [f"{first} cancelled 143", f"{second} exited 0"], waited.stdout
        plain = cli("top", "--once", "--all")  # not a terminal: one plain table, no escape codes
        assert plain.exit_code == 0, plain.stderr
        assert "\x1b" not in plain.stdout
        assert [line.split()[:3] for line in plain.stdout.splitlines()[1:]] == [
            [first, cells(cancelled, first)[1], "cancelled"],
            [second, cells(cancelled, second)[1], "exited"],
        ]
    finally:
        tmux("kill-server")
        leftovers = release_root(root)
    assert not leftovers, leftovers

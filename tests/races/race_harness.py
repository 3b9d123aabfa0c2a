"""Start N fresh interpreters, release them together, collect what they report.

The shape of filelock's strict stress test: real processes (not threads), a start barrier
(each worker touches ``ready-<i>`` and blocks at the start gate, start_gate.py), an overall deadline, and every
worker still alive at the end killed in a ``finally``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from start_gate import closed_gate

WORKER = Path(__file__).with_name("race_worker.py")


@dataclass
class Outcome:
    index: int
    returncode: int
    stdout: str
    stderr: str

    @property
    def report(self) -> dict[str, Any]:
        lines = [line for line in self.stdout.splitlines() if line.strip()]
        assert lines, f"worker {self.index} reported nothing (rc {self.returncode}): {self.stderr[-3000:]}"
        return json.loads(lines[-1])


def race(workdir: Path, workers: list[tuple[str, dict[str, Any]]], *, deadline_s: float) -> list[Outcome]:
    """Run one worker per ``(mode, args)`` entry (modes: race_worker.MODES); return their
    outcomes in the same order."""
    barrier = workdir / "barrier"
    barrier.mkdir(parents=True)
    with closed_gate(barrier) as open_gate:
        logs = workdir / "logs"
        logs.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "CASE_ROOT", "LAUNCHER_"))}
        procs: list[subprocess.Popen[bytes]] = []
        files = []
        deadline = time.monotonic() + deadline_s
        try:
            for index, (worker_mode, worker_args) in enumerate(workers):
                out = open(logs / f"{index}.out", "wb")  # noqa: SIM115 - closed in finally
                err = open(logs / f"{index}.err", "wb")  # noqa: SIM115
                files += [out, err]
                procs.append(
                    subprocess.Popen(
                        [sys.executable, str(WORKER), worker_mode, str(barrier), str(index), json.dumps(worker_args)],
                        stdout=out,
                        stderr=err,
                        env=env,
                        cwd=workdir,
                    )
                )
            # Start barrier: every worker has imported everything and waits at the gate.
            while len(list(barrier.glob("ready-*"))) < len(procs):
                dead = [p for p in procs if p.poll() is not None]
                assert not dead, f"a worker died before the start: {_tail(logs, procs.index(dead[0]))}"
                assert time.monotonic() < deadline, "workers did not reach the start barrier in time"
                time.sleep(0.01)
            open_gate()
            for proc in procs:
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"race of {worker_mode!r} workers overran its {deadline_s:.0f}s deadline"
                try:
                    proc.wait(timeout=remaining)
                except subprocess.TimeoutExpired:
                    raise AssertionError(
                        f"race of {worker_mode!r} workers overran its {deadline_s:.0f}s deadline"
                    ) from None
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            for handle in files:
                handle.close()
        return [
            Outcome(
                index,
                proc.returncode,
                (logs / f"{index}.out").read_text(errors="replace"),
                (logs / f"{index}.err").read_text(errors="replace"),
            )
            for index, proc in enumerate(procs)
        ]


def _tail(logs: Path, index: int) -> str:
    return (logs / f"{index}.err").read_text(errors="replace")[-3000:]

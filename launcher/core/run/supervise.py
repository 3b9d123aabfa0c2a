"""While the agent runs: its output to the log (and the terminal), its deadline, how it ended."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from launcher.core.ports import Sandbox
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import Ending, RunPlan
from launcher.core.run.secrets import Redactor
from launcher.core.runlayout import RunPaths
from launcher.models import RunRecord

Echo = Callable[[bytes], None]
# How long a killed agent's container gets to go, and its log stream to drain.
KILL_WAIT_S = 60.0
LOG_DRAIN_S = 30.0


class LogPump(threading.Thread):
    """Copies a container's output to the run's log file (and the terminal) as it comes."""

    def __init__(
        self,
        sandbox: Sandbox,
        container_id: str,
        log_path: Path,
        redactor: Redactor,
        echo: Echo | None,
        skip_through: bytes | None = None,
    ) -> None:
        super().__init__(daemon=True, name=f"logs-{container_id[:12]}")
        self.sandbox, self.container_id, self.log_path = sandbox, container_id, log_path
        self.redactor, self.echo = redactor, echo
        # A pool slot's container printed its readiness before the run took it: not the run's output.
        self.skip_through = skip_through

    def run(self) -> None:
        with open(self.log_path, "ab") as log:
            held = b""
            try:
                for chunk in self.sandbox.logs(self.container_id):
                    if self.skip_through is not None:
                        held += chunk
                        cut = held.find(self.skip_through)
                        if cut < 0:
                            continue
                        chunk, held, self.skip_through = held[cut + len(self.skip_through) :], b"", None
                    self._emit(log, self.redactor.feed(chunk))
            except Exception as exc:  # a broken log stream must not kill the run
                self._emit(log, f"\nlauncher: log stream ended: {exc}\n".encode())
            # No readiness line at all: the slot's container failed before it; show what it said.
            self._emit(log, self.redactor.feed(held) + self.redactor.flush())

    def _emit(self, log: BinaryIO, data: bytes) -> None:
        if not data:
            return
        log.write(data)
        log.flush()
        if self.echo is not None:
            self.echo(data)


def supervise(
    deps: RunDeps,
    run: RunRecord,
    container_id: str,
    plan: RunPlan,
    paths: RunPaths,
    echo: Echo | None,
    skip_through: bytes | None = None,
) -> tuple[Ending, int | None]:
    """Wait for the agent (killing it at its deadline); how it ended and its exit code."""
    sandbox = deps.sandbox
    redactor = Redactor({**plan.secrets, **plan.api_key_values})
    pump = LogPump(sandbox, container_id, paths.log, redactor, echo, skip_through)
    pump.start()
    try:
        code = sandbox.wait(container_id, plan.timeout)
        ending: Ending
        if code is None:
            sandbox.kill(container_id)
            code = sandbox.wait(container_id, KILL_WAIT_S)
            ending = "timed-out"
        else:
            ending = "exited" if code == 0 else "failed"
        state = sandbox.inspect_state(container_id) or {}
        if state.get("OOMKilled"):
            # Recorded, not retried: the agent outgrew its memory limit.
            deps.store.update_run(run.id, details={"oom_killed": True, "memory_limit": deps.defaults.memory})
        if deps.store.get_run(run.id).cancel_requested:
            ending = "cancelled"
        return ending, code
    finally:
        pump.join(timeout=LOG_DRAIN_S)

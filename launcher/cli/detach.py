"""`launcher run --detach`: a process of its own owns the run, so gc can tell if it dies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import Application, app_of
from launcher.errors import ExitCode, LauncherError

if TYPE_CHECKING:
    from launcher.core.run import RunRequest

SUPERVISOR_ANSWER_S = 30.0


def register(app: typer.Typer) -> None:
    app.command("run-supervisor", hidden=True)(run_supervisor)


def spawn_supervisor(app_: Application, request: RunRequest) -> str:
    """Start the supervisor, hand it the request; the run's ID once it has claimed the run."""
    argv = [sys.executable, "-m", "launcher", "--root", str(app_.root)]
    if app_.state_url_option:
        argv += ["--state-url", app_.state_url_option]
    proc = subprocess.Popen(
        [*argv, "run-supervisor"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(request.model_dump_json().encode())
    proc.stdin.close()
    line = proc.stdout.readline()
    proc.stdout.close()
    try:
        answer = json.loads(line or b"{}")
    except json.JSONDecodeError:
        answer = {}
    if "run_id" in answer:
        return str(answer["run_id"])
    proc.wait(timeout=SUPERVISOR_ANSWER_S)
    error = answer.get("error") or {}
    exc = LauncherError(
        error.get("message", f"the run supervisor exited with {proc.returncode}"), hint=error.get("hint")
    )
    exc.exit_code = int(answer.get("exit_code", ExitCode.FAILURE))
    exc.code = str(error.get("code", "run-supervisor"))
    raise exc


def run_supervisor(ctx: typer.Context) -> None:
    """Internal: own a detached run. Reads a RunRequest as JSON on stdin."""
    from launcher.adapters.procinfo import current_owner
    from launcher.core.run import RunRequest
    from launcher.errors import exit_code_of_run

    app_ = app_of(ctx)
    try:
        request = RunRequest.model_validate_json(sys.stdin.read())
        service = app_.runs
        plan = service.plan(request, dict(os.environ))
        record = service.create(plan, current_owner())
    except LauncherError as exc:
        error = {"code": exc.code, "message": exc.message, "hint": exc.hint}
        print(json.dumps({"error": error, "exit_code": exc.exit_code}))
        raise typer.Exit(exc.exit_code) from exc
    print(json.dumps({"run_id": record.id}), flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    from launcher.cli.run_cmd import cancel_on_signals

    with cancel_on_signals(plan.grace):
        record = service.execute(plan, record, echo=None)
    raise typer.Exit(exit_code_of_run(record.state.value))

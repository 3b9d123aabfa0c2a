"""`launcher wait RUN…`: block until runs have ended, as `docker wait` does for containers."""

from __future__ import annotations

import time

import typer

from launcher.cli.app_context import app_of, emit_json

POLL_S = 0.2


def register(app: typer.Typer) -> None:
    app.command("wait")(wait)


def wait(
    ctx: typer.Context,
    run_ids: list[str] = typer.Argument(..., help="Run IDs (see `launcher ps`)."),
    timeout: float = typer.Option(
        None, "--timeout", min=0, metavar="SECONDS", help="Give up after this long (default: wait forever)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the runs' final records as JSON (a list)."),
) -> None:
    """Wait until each run has ended; print `RUN STATE EXIT` for each as it ends.

    Exit status: the first non-zero status of the runs, in the order given, each as `launcher run`
    exits for it (0 exited, 10 failed, 11 timed-out, 12 cancelled, 13 lost, …; 18 when its push
    failed, 20 when a service of it never became healthy); the agent's own exit code is printed,
    not used (it would collide with launcher's codes).
    1 when --timeout passed first (the runs still live are printed with their state).
    """
    from launcher.core.run_view import exit_status
    from launcher.core.transitions import TERMINAL_RUN_STATES
    from launcher.errors import ExitCode

    store = app_of(ctx).read_only().store
    records = [store.get_run(run_id) for run_id in run_ids]  # an unknown run fails now, not after the others
    deadline = None if timeout is None else time.monotonic() + timeout
    for index, record in enumerate(records):
        # The run's owner (another process) records its end: there is nothing to block on but the store.
        while record.state not in TERMINAL_RUN_STATES and (deadline is None or time.monotonic() < deadline):
            time.sleep(POLL_S)
            record = store.get_run(record.id)
        records[index] = record
        if record.state in TERMINAL_RUN_STATES and not as_json:
            exit_text = "" if record.exit_code is None else f" {record.exit_code}"
            typer.echo(f"{record.id} {record.state.value}{exit_text}")
    live = [r for r in records if r.state not in TERMINAL_RUN_STATES]
    if as_json:
        from launcher.cli.run_cmd import run_view

        emit_json([run_view(r) for r in records])
    else:
        for record in live:
            typer.echo(f"{record.id} {record.state.value}")
    if live:
        typer.echo(f"launcher: {len(live)} run(s) still live after {timeout:g}s", err=True)
        raise typer.Exit(ExitCode.FAILURE)
    for record in records:
        code = exit_status(record)
        if code != ExitCode.OK:
            raise typer.Exit(code)

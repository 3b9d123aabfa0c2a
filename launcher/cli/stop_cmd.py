"""`launcher stop` and `launcher rm`: end a live run, remove what a run left."""

from __future__ import annotations

import typer

from launcher.cli.app_context import app_of, emit_json
from launcher.cli.run_cmd import run_view


def register(app: typer.Typer) -> None:
    app.command("stop")(stop)
    app.command("rm")(rm)


def stop(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID."),
    grace: float = typer.Option(
        None,
        "--grace",
        metavar="SECONDS",
        min=0,
        max=3600,
        help="Seconds the agent gets to exit after SIGTERM before SIGKILL (default: the run's own --grace, "
        "else launcher.toml's [run] grace, 10). 0: SIGKILL at once.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Stop a live run: SIGTERM to its agent, its grace period, then SIGKILL; the run is harvested
    and recorded as cancelled. A run that has already ended is left as it is: its state is
    printed and the exit status is 0."""
    from launcher.adapters.procinfo import owner_alive

    record = app_of(ctx).runs.stop(run_id, owner_alive, grace=grace)
    if as_json:
        emit_json(run_view(record))
    else:
        typer.echo(f"{record.id}: {record.state.value}")


def rm(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID."),
    force: bool = typer.Option(False, "--force", "-f", help="Stop the run first if it is live."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Remove a finished run's container and worktree. Its branch stays."""
    from launcher.adapters.procinfo import owner_alive

    report = app_of(ctx).runs.remove(run_id, owner_alive, force=force)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        for item in report.removed:
            typer.echo(f"removed {item}")
        typer.echo(f"kept branch {report.branch_kept}")

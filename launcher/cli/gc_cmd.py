"""`launcher gc`: settle what a launcher that died left behind, remove what no run owns."""

from __future__ import annotations

import typer

from launcher.cli.app_context import app_of, emit_json
from launcher.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("gc")(gc)


def gc(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only report what would be done."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Settle runs whose launcher died, and remove containers and folders no live run owns."""
    from launcher.adapters.procinfo import owner_alive
    from launcher.core.gc import GarbageCollector

    app_ = app_of(ctx).read_only() if dry_run else app_of(ctx)
    report = GarbageCollector(app_.runs.deps, owner_alive).collect(dry_run=dry_run)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        if not report.actions:
            typer.echo("nothing to collect")
        for action in report.actions:
            status = "would" if dry_run else ("done" if action.done else "FAILED")
            typer.echo(
                f"{status:6} {action.kind} {action.target}: {action.reason}"
                + (f" ({action.error})" if action.error else "")
            )
    if report.errors:
        raise typer.Exit(ExitCode.FAILURE)

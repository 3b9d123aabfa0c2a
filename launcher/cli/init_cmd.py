"""`launcher init`: create the state store, folders and launcher.toml (idempotent)."""

from __future__ import annotations

import typer

from launcher.cli.app_context import app_of, emit_json


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Prepare a case root: state store, tasks/active, launcher.toml. Safe to run twice."""
        from launcher.core.setup import initialise

        app_ = app_of(ctx)
        report = initialise(app_.layout, app_.store)
        if as_json:
            emit_json(report.model_dump(mode="json"))
            return
        typer.echo(f"case root:   {report.root}")
        typer.echo(f"state store: {report.state_url}")
        for path in report.created:
            typer.echo(f"created:     {path}")
        if not report.created:
            typer.echo("already initialised; nothing changed")

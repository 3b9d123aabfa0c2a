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
        app_.store  # noqa: B018 - opening the store creates and migrates it
        report = initialise(app_.layout)
        adoption = app_.reconcile(full=True)
        if as_json:
            emit_json({**report.model_dump(mode="json"), "adoption": adoption.model_dump(mode="json")})
            return
        typer.echo(f"case root:   {report.root}")
        typer.echo(f"state store: {report.state_url}")
        for path in report.created:
            typer.echo(f"created:     {path}")
        if not report.created:
            typer.echo("already initialised; nothing changed")
        for task_id in adoption.adopted:
            typer.echo(f"adopted:     {task_id}")
        for task_id in adoption.changed_outside:
            typer.echo(f"imported:    {task_id} (edited outside launcher)")
        for problem in adoption.invalid:
            typer.echo(f"not adopted: {problem.path}: {problem.error}")
        for md in adoption.legacy_md:
            typer.echo(f"legacy task: {md} (no .task.json; its number is reserved)")

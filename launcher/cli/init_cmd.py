"""`launcher init`: create the state store, folders and launcher.toml (idempotent)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import app_of, emit_json

if TYPE_CHECKING:
    from launcher.models import CaseLayoutFound


def describe_layout(found: CaseLayoutFound) -> str:
    files = f"{found.task_files} task file{'s' if found.task_files != 1 else ''}"
    if found.era.value == "harness":
        return f"harness (case at 3aa5f23: tasks/ under the root), {files}"
    repos = ", ".join(found.repos)
    return f"repo-local (case at 30b1fa1: <repo>/.case/tasks/), {files} in {repos}"


def register(app: typer.Typer) -> None:
    @app.command("init")
    def init(
        ctx: typer.Context,
        as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    ) -> None:
        """Prepare a case root: state store, tasks/active, launcher.toml. Safe to run twice.

        Finds case's task files in either layout (tasks/ under the root, as case at 3aa5f23 kept
        them; <repo>/.case/tasks/ of each repository in projects.json, as case at 30b1fa1 does),
        says which it found, and adopts them as they are: their files are not changed.
        """
        from launcher.core.setup import initialise

        app_ = app_of(ctx)
        app_.store  # noqa: B018 - opening the store creates and migrates it
        report = initialise(app_.layout)
        adoption = app_.reconcile(full=True)
        layouts = app_.case_layouts()
        projects = app_.projects.source
        if as_json:
            emit_json(
                {
                    **report.model_dump(mode="json"),
                    "case_layouts": [found.model_dump(mode="json") for found in layouts],
                    "projects_file": str(projects) if projects else None,
                    "adoption": adoption.model_dump(mode="json"),
                }
            )
            return
        typer.echo(f"case root:   {report.root}")
        typer.echo(f"state store: {report.state_url}")
        if projects is not None:
            typer.echo(f"projects:    {projects}")
        for found in layouts:
            typer.echo(f"case layout: {describe_layout(found)}")
        if not layouts:
            layout = app_.config.case.layout
            typer.echo(f"case layout: no task files yet; new tasks follow [case] layout = {layout!r}")
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

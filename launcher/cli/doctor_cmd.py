"""`launcher doctor`: is this machine ready for runs? One line per check, a hint for each failure."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(ctx: typer.Context) -> None:
    """Check the engine, images, git, disk, egress proxy, case root and coordinator (stub)."""
    raise typer.Exit(0)

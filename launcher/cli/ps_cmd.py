"""`launcher ps` and `launcher logs`: what runs there are, and what they printed."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import app_of, emit_json, table
from launcher.cli.run_cmd import run_view

if TYPE_CHECKING:
    from launcher.models import RunRecord


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("logs")(logs)


def ps(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", "-a", help="Include finished runs."),
    as_json: bool = typer.Option(False, "--json", help="Print runs as JSON."),
) -> None:
    """List live runs (all runs with --all)."""
    from launcher.core.transitions import LIVE_RUN_STATES

    runs = app_of(ctx).read_only().store.list_runs(states=None if all_ else LIVE_RUN_STATES)
    if as_json:
        emit_json([run_view(r) for r in runs])
        return
    if not runs:
        typer.echo("no runs" if all_ else "no live runs (see --all)")
        return
    rows = [
        [
            r.id,
            r.task_id[:40],
            r.state.value,
            "" if r.exit_code is None else str(r.exit_code),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.branch,
            _published(r),
        ]
        for r in runs
    ]
    typer.echo(table(rows, ["RUN", "TASK", "STATE", "EXIT", "CREATED", "BRANCH", "PUSHED"]))


def _published(run: RunRecord) -> str:
    """`yes`, `yes+PR#12`, `FAILED` (see `run --json` for why), `-` (nothing to push), or blank."""
    published = run.details.publish
    if published is None:
        return ""
    if published.error is not None:
        return "FAILED"
    if not published.pushed:
        return "-"
    pull = published.pull_request
    return f"yes+PR#{pull.number}" if pull is not None else "yes"


def logs(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID (see `launcher ps`)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    egress: bool = typer.Option(
        False,
        "--egress",
        help="Print the run's network decisions instead: one JSON line per host it tried to reach "
        "(decision allow|deny, reason, status).",
    ),
) -> None:
    """Print a run's log (agent output, secrets redacted), or with --egress what it tried to reach."""
    for chunk in app_of(ctx).read_only().runs.read_log(run_id, egress=egress, follow=follow):
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()

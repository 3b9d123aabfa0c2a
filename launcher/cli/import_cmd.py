"""`launcher import`: turn the kept bundle of a run that ended unharvested into a branch."""

from __future__ import annotations

from pathlib import Path

import typer

from launcher.cli.app_context import app_of, emit_json


def register(app: typer.Typer) -> None:
    app.command("import")(import_run)


def import_run(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID."),
    bundle: Path = typer.Option(
        None, "--bundle", metavar="FILE", help="Import this bundle instead of the one the run kept."
    ),
    branch: str = typer.Option(
        None,
        "--branch",
        metavar="NAME",
        help="Put HEAD on this new branch (it need not descend from the run's base) instead of the run's own.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Import a run's work from its kept bundle: HEAD onto its branch, the rest under its refs.

    The same checks as the harvest at the end of a run (a regular file under [run] bundle_max,
    verified, every object fsck-checked, compare-and-set). Exit status: 0 when HEAD's commits
    are on the branch; 15 when the bundle still cannot be imported (the message says why).

    Examples:

    \b
      launcher import demo-1.1                      # after raising [run] bundle_max
      launcher import demo-1.1 --branch rescued     # HEAD not on the base, or the branch moved
      launcher import demo-1.1 --bundle ./work.bundle
    """
    from launcher.cli.run_cmd import run_view
    from launcher.core.run.harvest import import_bundle

    app_ = app_of(ctx)
    record = import_bundle(app_.runs.deps, run_id, bundle=bundle, branch=branch)
    if as_json:
        emit_json(run_view(record))
        return
    harvest = record.details.harvest
    assert harvest is not None
    commits = len(harvest.commits)
    typer.echo(f"{record.id}: {commits} commit(s) on {harvest.imported} (tip {(harvest.tip or '')[:12]})")
    for ref in sorted(harvest.refs):
        typer.echo(f"kept {ref}")
    for warning in harvest.warnings:
        typer.echo(f"warning: {warning}", err=True)

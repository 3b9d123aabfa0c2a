"""`launcher prune`: delete run branches and their records."""

from __future__ import annotations

import typer

from launcher.cli.app_context import app_of, emit_json
from launcher.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("prune")(prune)


def prune(
    ctx: typer.Context,
    merged: bool = typer.Option(False, "--merged", help="Branches merged into the branch their run started from."),
    empty: bool = typer.Option(False, "--empty", help="Branches with no commits beyond their run's base."),
    older_than: str = typer.Option(
        None, "--older-than", metavar="DURATION", help="Branches of runs that ended longer ago than this: 12h, 7d, 2w."
    ),
    force: bool = typer.Option(False, "--force", "-f", help="Also delete branches with work merged nowhere."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only list what would be deleted."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Delete the branches of ended runs, their kept refs and their record folders.

    Without --merged, --empty or --older-than: --merged --empty (nothing is lost). A branch
    with commits its base branch lacks (or kept refs holding such work) goes only with --force.
    Never: a live run's branch; a run whose record holds work kept nowhere else (unharvested);
    a branch checked out in a worktree; a branch that moved since prune looked at it (the
    deletion is a compare-and-set: it is kept and reported, exit status 3). The runs stay
    listed in `ps --all`, marked branch_pruned.

    \b
      launcher prune --dry-run
      launcher prune --older-than 30d --force
    """
    from launcher.adapters.git_results import open_results
    from launcher.core.branch_prune import BranchRules, prune_branches
    from launcher.core.units import parse_duration

    rules = BranchRules(
        merged=merged,
        empty=empty,
        older_than=parse_duration(older_than, what="--older-than") if older_than else None,
        force=force,
    )
    if not rules.any:
        rules = BranchRules(merged=True, empty=True, force=force)
    app_ = app_of(ctx).read_only() if dry_run else app_of(ctx)
    locks = app_.layout.locks_dir
    report = prune_branches(app_.runs.deps, lambda path: open_results(path, lock_dir=locks), rules, dry_run=dry_run)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        if not report.items:
            typer.echo("nothing to prune")
        for item in report.items:
            status = {"deleted": "deleted", "would-delete": "would", "kept": "KEPT"}[item.action]
            line = f"{status:7} {item.branch} ({item.run_id}): {', '.join(item.chosen)}"
            typer.echo(line + (f"; {item.reason}" if item.reason else ""))
    if report.moved:
        raise typer.Exit(ExitCode.CONFLICT)

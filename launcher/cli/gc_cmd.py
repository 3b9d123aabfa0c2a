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
    older_than: str = typer.Option(
        None,
        "--older-than",
        metavar="DURATION",
        help="Also prune the records (logs, decision logs, bundle copies) of runs that ended longer ago "
        "than this: 12h, 7d, 2w. Never a record that holds work kept nowhere else (unharvested runs).",
    ),
    max_records: str = typer.Option(
        None,
        "--max-records",
        metavar="SIZE",
        help="Also prune the oldest prunable records until all of them hold at most SIZE: 500m, 10g.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Settle runs whose launcher died, and remove containers and folders no live run owns.

    With --older-than or --max-records, also prune old runs' records under .launcher/runs/
    (the runs stay listed, marked pruned; their branches and refs stay).

    \b
      launcher gc --dry-run
      launcher gc --older-than 7d --max-records 10g
    """
    from launcher.adapters.procinfo import owner_alive
    from launcher.core.gc import GarbageCollector
    from launcher.core.prune import PruneRules, prune_records
    from launcher.core.units import parse_duration, parse_size

    rules = PruneRules(
        older_than=parse_duration(older_than, what="--older-than") if older_than else None,
        max_bytes=parse_size(max_records, what="--max-records") if max_records else None,
    )
    app_ = app_of(ctx).read_only() if dry_run else app_of(ctx)
    report = GarbageCollector(app_.runs.deps, owner_alive).collect(dry_run=dry_run)
    if rules.older_than is not None or rules.max_bytes is not None:
        prune_records(app_.runs.deps, report, rules)
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

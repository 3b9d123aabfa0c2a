"""`launcher ps` and `launcher logs`: what runs there are, and what they printed."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import app_of, emit_json, table
from launcher.cli.run_cmd import run_view

if TYPE_CHECKING:
    from datetime import datetime

    from launcher.core.run import RunService
    from launcher.models import RunRecord


def register(app: typer.Typer) -> None:
    app.command("ps")(ps)
    app.command("logs")(logs)


def ps(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", "-a", help="Include finished runs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Print run IDs only, one a line."),
    filters: list[str] = typer.Option(
        [],
        "--filter",
        "-f",
        metavar="KEY=VALUE",
        help="Only runs that match: id (prefix), state, task (ID or prefix), repo (name or path), "
        "label (KEY or KEY=VALUE, from `run --label`). Repeatable: the same key twice matches either value "
        "(label filters must all match, as docker's), different keys must all match. "
        "A state filter looks at finished runs too.",
    ),
    format_: str = typer.Option(
        None,
        "--format",
        metavar="TEMPLATE",
        help="`json` (as --json), `table` (the default), or a template such as "
        "'{{.ID}}\\t{{.State}}\\t{{.Duration}}' or '{{json .}}' (fields: ID, Task, State, Exit, Branch, "
        "Created, Ended, Duration, Commits, Result, Denied, Pushed, Repo, Image, Attempt).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print runs as JSON."),
) -> None:
    """List live runs (all runs with --all): duration, commits, the agent's result, egress denials,
    the last output line.

    The table drops its widest optional columns when the terminal ($COLUMNS) is too narrow.
    """
    from launcher.core import run_view as view
    from launcher.core.transitions import LIVE_RUN_STATES
    from launcher.models import utcnow

    try:
        wanted = view.parse_filters(filters)
    except view.FilterError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--filter'") from None
    render = None
    if format_ == "json":
        as_json = True
    elif format_ not in (None, "table"):
        if "{{" not in format_:
            raise typer.BadParameter(
                f"{format_!r} is no format: use json, table, or a template with {{{{.Field}}}}",
                param_hint="'--format'",
            )
        try:
            render = view.compile_template(format_)
        except view.TemplateError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--format'") from None

    everything = all_ or "state" in wanted
    runs = app_of(ctx).read_only().store.list_runs(states=None if everything else LIVE_RUN_STATES)
    runs = [r for r in runs if view.matches(r, wanted)]
    now = utcnow()
    if quiet:
        for run in runs:
            typer.echo(run.id)
        return
    if as_json:
        emit_json([run_view(r) for r in runs])
        return
    if render is not None:
        for run in runs:
            typer.echo(render(run, now))
        return
    if not runs:
        typer.echo("no runs match" if wanted else "no runs" if all_ else "no live runs (see --all)")
        return
    typer.echo(_table(runs, now, _terminal_width(), _last_line_of(app_of(ctx).read_only().runs)))


def _table(runs: list[RunRecord], now: datetime, width: int | None, last_line: Callable[[RunRecord], str]) -> str:
    from launcher.core import run_view as view

    rows = view.table_rows(runs, now, last_line)
    columns = view.fit_columns(rows, width)
    headers = [view.HEADERS.get(c, c).upper() for c in columns]
    return table([[r[c] for c in columns] for r in rows], headers)


def _last_line_of(service: RunService) -> Callable[[RunRecord], str]:
    """A run's last output line as the table shows it (control characters as text)."""
    from launcher.adapters.live_run import tail
    from launcher.cli.terminal import neutralise
    from launcher.core.top_view import last_line

    def last(run: RunRecord) -> str:
        return neutralise(last_line(tail(service.log_path(run))))

    return last


def _terminal_width() -> int | None:
    """$COLUMNS, else the terminal's width; None (no limit) when the output is no terminal."""
    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    if sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def logs(
    ctx: typer.Context,
    run_ids: list[str] = typer.Argument(..., help="Run IDs (see `launcher ps`); several print side by side."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the runs end."),
    tail: int = typer.Option(
        None, "--tail", "-n", min=0, metavar="N", help="Start with the last N lines of each log (then -f goes on)."
    ),
    egress: bool = typer.Option(
        False,
        "--egress",
        help="Print the run's network decisions instead: one JSON line per host it tried to reach "
        "(decision allow|deny, reason, status).",
    ),
    timestamps: bool = typer.Option(
        False, "--timestamps", "-t", help="Start each line with when launcher wrote it (ISO 8601, UTC, ms)."
    ),
    since: str = typer.Option(
        None,
        "--since",
        metavar="WHEN",
        help="Only lines written since WHEN: a duration ago (90s, 10m, 2h) or an ISO 8601 time.",
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help='One JSON object a line: {"run": ID, "line": TEXT} (invalid UTF-8 replaced); with -t or --since '
        'also "at".',
    ),
) -> None:
    """Print a run's log (agent output, secrets redacted), or with --egress what it tried to reach.

    With several runs, each line starts with `RUN | `. The log keeps the agent's bytes exactly as
    written; when each part was written is kept beside it, for -t and --since (a line's time is
    when its first byte reached the log).
    """
    if timestamps or since is not None:
        if egress:
            typer.echo("launcher: error: --egress decisions carry their own time (`at`); no -t or --since", err=True)
            raise typer.Exit(2)
        _timed_logs(ctx, list(run_ids), follow=follow, tail=tail, since=since, timestamps=timestamps, as_json=as_json)
        return
    chunks = app_of(ctx).read_only().runs.read_logs(list(run_ids), egress=egress, follow=follow, tail=tail)
    if len(run_ids) == 1 and not as_json:
        # One run: its bytes exactly as written (never decoded), as `logs` always printed them.
        for _run, chunk in chunks:
            _write(chunk)
        return
    width = max(len(r) for r in run_ids)
    for run_id, line in _lines(chunks):
        if as_json:
            text = line.decode("utf-8", errors="replace").removesuffix("\n")
            _write(json.dumps({"run": run_id, "line": text}).encode() + b"\n")
        else:
            _write(run_id.ljust(width).encode() + b" | " + line + (b"" if line.endswith(b"\n") else b"\n"))


def _timed_logs(
    ctx: typer.Context,
    run_ids: list[str],
    *,
    follow: bool,
    tail: int | None,
    since: str | None,
    timestamps: bool,
    as_json: bool,
) -> None:
    import time
    from datetime import UTC, datetime

    from launcher.core.units import parse_since

    moment = parse_since(since, time.time()) if since is not None else None
    lines = app_of(ctx).read_only().runs.read_timed_lines(run_ids, follow=follow, tail=tail, since=moment)
    width = max(len(r) for r in run_ids)

    def stamp(at: float | None) -> str | None:
        if at is None:
            return None
        return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

    for timed in lines:
        when = stamp(timed.at)
        if as_json:
            text = timed.line.decode("utf-8", errors="replace").removesuffix("\n")
            _write(json.dumps({"run": timed.run_id, "line": text, "at": when}).encode() + b"\n")
            continue
        line = timed.line if timed.line.endswith(b"\n") else timed.line + b"\n"
        prefix = f"{timed.run_id.ljust(width)} | " if len(run_ids) > 1 else ""
        if timestamps:
            prefix += f"{when or '-':<24} "
        _write(prefix.encode() + line)


def _lines(chunks: Iterable[tuple[str, bytes]]) -> Iterator[tuple[str, bytes]]:
    """Whole lines per run, as they complete; each run's unfinished last line at the end."""
    pending: dict[str, bytes] = {}
    for run_id, chunk in chunks:
        data = pending.pop(run_id, b"") + chunk
        *whole, rest = data.split(b"\n")
        for line in whole:
            yield run_id, line + b"\n"
        if rest:
            pending[run_id] = rest
    yield from pending.items()


def _write(data: bytes) -> None:
    out = sys.stdout
    buffer = getattr(out, "buffer", None)
    if buffer is not None:
        buffer.write(data)
        buffer.flush()
    else:  # a text stream without bytes under it (an in-process caller's StringIO)
        out.write(data.decode("utf-8", errors="replace"))
        out.flush()

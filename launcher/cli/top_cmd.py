"""`launcher top`: the root's runs, live, redrawn in place; keys to look at a run and to stop it.

Drawn with rich's Live (already a dependency, as batch's live table is): a table redrawn in
the terminal's alternate screen is all `top` needs, and keys come from the terminal in cbreak
mode (stdlib termios), read between refreshes. Textual would bring an application framework,
its own event loop and a new dependency for one table and four keys.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import typer

from launcher.cli.app_context import Application, app_of, emit_json, table

if TYPE_CHECKING:
    from rich.console import RenderableType

    from launcher.adapters.docker.stats import ContainerStats
    from launcher.adapters.live_run import DenialCounter
    from launcher.core.top_view import RunFacts, TopRow, TopState
    from launcher.models import RunRecord

LOG_LINES_MIN = 5


def register(app: typer.Typer) -> None:
    app.command("top")(top)


def top(
    ctx: typer.Context,
    once: bool = typer.Option(False, "--once", help="Print the table once, plainly, and exit."),
    interval: float = typer.Option(
        2.0, "--interval", "-n", min=0.2, max=3600, metavar="SECONDS", help="Seconds between refreshes."
    ),
    all_: bool = typer.Option(False, "--all", "-a", help="Include runs that ended before top started."),
    as_json: bool = typer.Option(False, "--json", help="Print the runs as JSON once (implies --once)."),
) -> None:
    """A live view of the root's runs: state, age, CPU and memory (the engine's stats), commits so
    far, egress refusals and each run's last output line, redrawn every --interval seconds.

    \b
    Keys: ↑/↓ (or j/k) select a run; l shows its log's tail (live); d its diff (--stat, once it
    has ended); s stops it (y to confirm); Esc back to the table; q quits.

    Runs that end while top shows them stay, with their end state. Not on a terminal (piped,
    redirected), or with --once or --json, it prints one plain table and exits: no escape codes.
    """
    app_ = app_of(ctx).read_only()
    watch = _Watch(app_, all_=all_)
    try:
        interactive = not (once or as_json) and sys.stdout.isatty() and sys.stdin.isatty()
        if not interactive:
            # Stats need a second sample from the engine: a one-shot look shows memory only when
            # it waits for one, so it waits (at most one engine tick) when a run is running.
            rows = watch.refresh(wait_for_stats=True)
            if as_json:
                emit_json([r.model_dump(mode="json") for r in rows])
            elif not rows:
                typer.echo("no live runs (see --all)" if not all_ else "no runs")
            else:
                from launcher.core.top_view import plain_table

                grid = plain_table(rows, _terminal_width())
                typer.echo(table(grid[1:], grid[0]))
            return
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C quits top as q does
            _interactive(watch, interval)
    finally:
        watch.close()


def _terminal_width() -> int | None:
    """$COLUMNS, else the terminal's; None (no limit) when the output is no terminal (as ps)."""
    given = os.environ.get("COLUMNS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return os.get_terminal_size(sys.stdout.fileno()).columns if sys.stdout.isatty() else None


# -- what is measured -----------------------------------------------------------------------


@dataclass
class _Watch:
    app: Application
    all_: bool
    tracked: list[str] = field(default_factory=list)  # run IDs shown once: kept, in order
    counters: dict[str, DenialCounter] = field(default_factory=dict)
    records: dict[str, RunRecord] = field(default_factory=dict)
    facts: dict[str, RunFacts] = field(default_factory=dict)
    _stats: ContainerStats | None = None

    @property
    def stats(self) -> ContainerStats:
        if self._stats is None:
            from launcher.adapters.docker.stats import ContainerStats

            self._stats = ContainerStats()
        return self._stats

    def refresh(self, *, wait_for_stats: bool = False) -> list[TopRow]:
        from launcher.core import top_view
        from launcher.core.transitions import LIVE_RUN_STATES, RunState
        from launcher.models import utcnow

        store = self.app.store
        live = store.list_runs(states=LIVE_RUN_STATES)
        if self.all_:
            runs = store.list_runs(states=None)
        else:
            known = {r.id for r in live}
            ended = [store.get_run(i) for i in self.tracked if i not in known]
            runs = sorted([*live, *ended], key=lambda r: (r.created_at, r.id))
        self.tracked = [r.id for r in runs]
        self.records = {r.id: r for r in runs}
        running = {r.container_id: r for r in runs if r.state is RunState.RUNNING and r.container_id}
        if running:
            self.stats.follow(running)
            if wait_for_stats:
                self._await_stats(list(running))
        elif self._stats is not None:
            self.stats.follow([])
        self.facts = {r.id: self._facts(r) for r in runs}
        return top_view.rows(runs, self.facts, utcnow())

    def _await_stats(self, container_ids: list[str]) -> None:
        # One engine tick (a second) and a little: then print what there is.
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline and self.stats.error is None:
            found = [self.stats.usage(c) for c in container_ids]
            if all(u is not None and u.cpu_percent is not None for u in found):
                return
            time.sleep(0.05)  # the readers are threads fed by the engine: nothing to block on

    def _facts(self, run: RunRecord) -> RunFacts:
        from launcher.adapters import live_run
        from launcher.core.top_view import RunFacts, last_line
        from launcher.core.transitions import LIVE_RUN_STATES, RunState

        runs = self.app.runs
        live = run.state in LIVE_RUN_STATES
        commits = denied = None
        if live and run.details.base_sha and run.state is RunState.RUNNING:
            commits = live_run.commits_so_far(runs.paths(run).git_dir, run.details.base_sha)
        if live:
            denied = self.counters.setdefault(run.id, live_run.DenialCounter()).read(runs.log_path(run, egress=True))
        usage = self.stats.usage(run.container_id) if live and run.container_id and self._stats else None
        return RunFacts(
            usage=usage,
            commits=commits,
            denied=denied,
            last_line=_shown(last_line(live_run.tail(runs.log_path(run)))),
        )

    def log_tail(self, run_id: str, lines: int) -> str:
        from launcher.adapters import live_run

        record = self.records.get(run_id)
        if record is None:
            return ""
        data = live_run.tail(self.app.runs.log_path(record), 64 * 1024)
        text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
        shown = [_shown(line.rsplit("\r", 1)[-1].expandtabs(4)) for line in text.split("\n")]
        while shown and not shown[-1].strip():
            shown.pop()
        return "\n".join(shown[-lines:]) if shown else "(nothing in the log yet)"

    def diff_text(self, run_id: str) -> str:
        from launcher.core import results, top_view
        from launcher.core.transitions import LIVE_RUN_STATES
        from launcher.errors import LauncherError

        record = self.records.get(run_id)
        if record is None:
            return ""
        if record.state in LIVE_RUN_STATES:
            facts = self.facts.get(run_id)
            return top_view.live_diff_note(run_id, facts.commits if facts else None)
        from launcher.cli.results_cmd import results_deps

        try:
            found, text = results.diff(results_deps(self.app), run_id, stat=True)
        except LauncherError as exc:
            return f"no diff: {exc.message}"
        if not text:
            return f"{run_id} has no changes ({found.branch} is at its base)"
        return _shown(text.decode("utf-8", "replace")).rstrip("\n")

    @property
    def stats_error(self) -> str | None:
        return None if self._stats is None else self._stats.error

    def close(self) -> None:
        if self._stats is not None:
            self._stats.close()


def _shown(text: str) -> str:
    from launcher.cli.terminal import neutralise

    return neutralise(text)


# -- on a terminal --------------------------------------------------------------------------


@contextlib.contextmanager
def _cbreak(fd: int) -> Iterator[None]:
    """Keys as they are pressed, not echoed; the terminal as it was afterwards, whatever happens."""
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _keys(fd: int, timeout: float) -> list[str]:
    from launcher.core.top_view import parse_keys

    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return []
    data = os.read(fd, 64)
    return parse_keys(data) if data else ["q"]  # the terminal is gone: nothing will press q


class _Stopper:
    """Stops run in a thread of their own (a stop waits for the grace period and the harvest), each
    with its own coordinator connection: the view's is not shared across threads."""

    def __init__(self, app: Application) -> None:
        self.root, self.state_url = str(app.root), app.state_url_option
        self.lock = threading.Lock()
        self.done: list[str] = []

    def stop(self, run_id: str) -> None:
        threading.Thread(target=self._stop, args=(run_id,), name=f"stop-{run_id}", daemon=True).start()

    def _stop(self, run_id: str) -> None:
        from launcher.adapters.procinfo import owner_alive
        from launcher.errors import LauncherError

        own = Application(self.root, self.state_url)
        try:
            record = own.runs.stop(run_id, owner_alive)
            said = f"{record.id}: {record.state.value}"
        except LauncherError as exc:
            said = f"could not stop {run_id}: {exc.message}"
        finally:
            own.close()
        with self.lock:
            self.done.append(said)

    def messages(self) -> list[str]:
        with self.lock:
            said, self.done = self.done, []
        return said


def _interactive(watch: _Watch, interval: float) -> None:
    from rich.console import Console
    from rich.live import Live

    from launcher.core.top_view import TopState, press, select

    console = Console()
    stopper = _Stopper(watch.app)
    state = TopState()
    fd = sys.stdin.fileno()
    diff = ""
    with _cbreak(fd), Live(console=console, screen=True, auto_refresh=False, transient=True) as live:
        next_refresh = 0.0
        rows: list[TopRow] = []
        while True:
            now = time.monotonic()
            if now >= next_refresh:
                rows = watch.refresh()
                next_refresh = now + interval
            said = stopper.messages()
            if said:
                state = TopState(state.selected, state.mode, "; ".join(said))
                rows = watch.refresh()
            shown = [r.id for r in rows]
            state = select(state, shown)
            live.update(_screen(watch, rows, state, diff, console.size.height), refresh=True)
            for key in _keys(fd, max(0.05, min(next_refresh - time.monotonic(), interval))):
                state, action = press(state, key, shown, {r.id for r in rows if r.live})
                if action == "quit":
                    return
                if action == "stop" and state.selected is not None:
                    stopper.stop(state.selected)
                if action == "diff" and state.selected is not None:
                    diff = watch.diff_text(state.selected)


def _screen(watch: _Watch, rows: list[TopRow], state: TopState, diff: str, height: int) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from launcher.core.top_view import COLUMNS, HELP, cells

    grid = Table(expand=True, box=None, pad_edge=False, header_style="bold")
    # The selection is marked in text too, not only in reverse video: a screen reader or a
    # captured pane sees it.
    grid.add_column("", no_wrap=True, width=1)
    for name in COLUMNS:
        last = name == "LAST"
        grid.add_column(name, no_wrap=True, overflow="ellipsis", ratio=1 if last else None, min_width=None)
    for row in rows:
        # Text, never a str: rich would read `[...]` in an agent's line as markup.
        style = "reverse" if row.id == state.selected else ""
        mark = Text(">" if row.id == state.selected else " ")
        grid.add_row(mark, *(Text(cells(row)[c]) for c in COLUMNS), style=style)
    count = len([r for r in rows if r.live])
    title = Text(f"launcher top  {watch.app.root}  {count} live, {len(rows)} shown", style="bold")
    parts: list[Any] = [title, grid if rows else Text("no live runs")]
    error = watch.stats_error
    if error:
        parts.append(Text(error, style="yellow"))
    room = max(LOG_LINES_MIN, height - len(rows) - 6)
    if state.selected is not None and state.mode == "log":
        parts += [
            Text(f"── log of {state.selected} (l or Esc: back)", style="bold"),
            Text(watch.log_tail(state.selected, room)),
        ]
    elif state.selected is not None and state.mode == "diff":
        shown = "\n".join(diff.split("\n")[:room])
        parts += [Text(f"── diff --stat of {state.selected} (d or Esc: back)", style="bold"), Text(shown)]
    if state.message:
        parts.append(Text(state.message, style="bold yellow" if state.mode == "confirm-stop" else ""))
    parts.append(Text(HELP, style="dim"))
    return Group(*parts)

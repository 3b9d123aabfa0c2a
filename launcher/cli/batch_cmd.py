"""`launcher queue`, `launcher batch`, `launcher matrix`: unattended runs and CI matrices."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import Application, app_of, emit_json
from launcher.errors import ExitCode

if TYPE_CHECKING:
    from rich.table import Table

    from launcher.core.batch import BatchEvent, BatchSummary
    from launcher.core.ports import Coordinator
    from launcher.core.run import RunService


SIDE_RECONNECT_S = 2.0


def register(app: typer.Typer) -> None:
    app.command("queue")(queue)
    app.command("batch")(batch)
    app.command("matrix")(matrix)


def queue(
    ctx: typer.Context,
    task_ids: list[str] = typer.Argument(..., help="Tasks to queue (full IDs or <repo>-<N>)."),
    as_json: bool = typer.Option(False, "--json", help="Print the queued tasks as JSON."),
) -> None:
    """Queue tasks for `launcher batch` (again, if they ran before)."""
    queued = app_of(ctx).tasks.enqueue(task_ids)
    if as_json:
        emit_json([{"id": t.id, "queued": t.queued, "queued_at": t.queued_at} for t in queued])
    else:
        for task in queued:
            typer.echo(f"queued {task.id}")


def batch(
    ctx: typer.Context,
    parallel: int = typer.Option(1, "--parallel", "-j", min=1, max=64, help="Runs at once."),
    retries: int = typer.Option(2, "--retries", min=0, max=20, help="Extra attempts after infrastructure failures."),
    timeout: float = typer.Option(None, "--timeout", help="Seconds per run (default: launcher.toml's)."),
    grace: float = typer.Option(
        None,
        "--grace",
        metavar="SECONDS",
        min=0,
        max=3600,
        help="Seconds an agent gets to exit after SIGTERM (timeout, stop) before SIGKILL (default: launcher.toml's).",
    ),
    until_empty: bool = typer.Option(
        True, "--until-empty/--watch", help="Stop when the queue is empty, or keep watching it."
    ),
    lease: float = typer.Option(60.0, "--lease", min=0.5, help="Seconds a claim lasts without renewal."),
    poll: float = typer.Option(2.0, "--poll", min=0.05, help="Seconds between looks at an empty queue."),
    idle_every: float = typer.Option(
        60.0,
        "--idle-every",
        metavar="SECONDS",
        min=0,
        help="--watch: say `idle: queue empty, N done, waiting` this often while there is nothing to do (0: never).",
    ),
    metrics_port: int = typer.Option(
        None,
        "--metrics-port",
        metavar="PORT",
        min=0,
        max=65535,
        help="Serve Prometheus metrics at http://HOST:PORT/metrics while the batch runs (0: pick a free port, "
        "printed first).",
    ),
    metrics_host: str = typer.Option(
        "127.0.0.1",
        "--metrics-host",
        metavar="ADDRESS",
        help="Where --metrics-port listens (0.0.0.0: every interface).",
    ),
    network: str = typer.Option(
        None, "--network", metavar="none|allowlist|open", help="Network mode of every run (default: launcher.toml's)."
    ),
    allow: list[str] = typer.Option(None, "--allow", metavar="HOST[:PORT]", help="A host every run may reach."),
    preset: list[str] = typer.Option(None, "--preset", metavar="NAME", help="A host preset every run may reach."),
    api_key: list[str] = typer.Option(
        None, "--api-key", metavar="NAME=UPSTREAM", help="A key the proxy adds for every run (see `run --help`)."
    ),
    sparse: list[str] = typer.Option(
        None, "--sparse", metavar="DIR", help="Check out only these folders in every run (see `run --help`)."
    ),
    port: list[str] = typer.Option(
        None,
        "--port",
        metavar="NAME[=[SERVICE:]PORT]",
        help="Lease a host port on 127.0.0.1 for every run (each run its own; see `run --help`). Repeatable.",
    ),
    service_names: list[str] = typer.Option(
        None, "--service", metavar="NAME", help="Start [run.services.NAME] for every run (see `run --help`)."
    ),
    label: list[str] = typer.Option(
        None, "--label", "-l", metavar="KEY[=VALUE]", help="A label every run carries (see `run --help`)."
    ),
    push: bool = typer.Option(
        None, "--push/--no-push", help="The host pushes every run's branch after harvest (see `run --help`)."
    ),
    remote: str = typer.Option(None, "--remote", metavar="NAME|URL", help="Where --push pushes."),
    pr: bool = typer.Option(None, "--pr/--no-pr", help="Push, then open each task attempt's pull request."),
    agent: str = typer.Option(
        None,
        "--agent",
        metavar="NAME",
        help="The agent profile every run uses (`launcher agent list`; default: [agent] default). Each task's "
        "description (its .md) is the prompt.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print events as JSON lines and the summary as JSON."),
) -> None:
    """Claim queued tasks and run each as an isolated run, until the queue is empty (or forever with --watch).

    Several batches (on one machine or many, sharing a coordinator) never run the same task twice.
    Only infrastructure failures are retried; an agent's non-zero exit is its result.
    Exit status: 0 when every task's run exited 0, 10 when any run did not, 1 on batch errors.
    """
    from launcher.adapters.procinfo import current_owner, owner_alive
    from launcher.cli.run_cmd import user_labels
    from launcher.core import agents
    from launcher.core.batch import Batch, BatchOptions
    from launcher.core.netpolicy import normalise_mode

    labels = user_labels(label)
    app_ = app_of(ctx)
    chosen = agents.resolve(app_.config.agent, agent)
    reconnect = app_.layout.reconnect_seconds
    options = BatchOptions(
        parallel=parallel,
        retries=retries,
        timeout=timeout,
        grace=grace,
        watch=not until_empty,
        idle_seconds=idle_every,
        lease_seconds=lease,
        poll_seconds=poll,
        reconnect_seconds=reconnect,
        network=normalise_mode(network) if network else None,
        allow=allow or [],
        presets=preset or [],
        api_keys=api_key or [],
        sparse=sparse or [],
        ports=port or [],
        services=service_names or [],
        labels=labels,
        push=push,
        remote=remote,
        pr=pr,
        agent=chosen[0] if chosen else None,
        profile=chosen[1] if chosen else None,
    )
    # Open (and migrate) the store once before the workers race to.
    options.coordinator = getattr(app_.store, "display_url", None) or app_.layout.state_url(app_.state_url_option)
    # Connections of their own for a scrape and the live table's redraw (the workers' are theirs
    # alone), riding out a coordinator away only briefly: a scrape or a redraw is not to hang on
    # it, launcher_coordinator_up says it.
    side_stores = _SideStores(lambda: _side_store(app_))
    metrics = None
    stop_metrics: Callable[[], None] | None = None
    if metrics_port is not None:
        from launcher.core.metrics import batch_registry, serve

        registry, metrics = batch_registry(side_stores.get("metrics"), parallel)
        try:
            host, bound, stop_metrics = serve(registry, metrics_host, metrics_port)
        except OSError as exc:
            side_stores.close()
            raise typer.BadParameter(
                f"cannot listen on {metrics_host}:{metrics_port}: {exc.strerror or exc}", param_hint="'--metrics-port'"
            ) from None
        where = f"http://{host if ':' not in host else f'[{host}]'}:{bound}/metrics"
        if as_json:
            print(json.dumps({"metrics": {"url": where, "host": host, "port": bound}}), file=sys.stderr, flush=True)
        else:
            typer.echo(f"batch: metrics at {where}", err=True)
    live = None if as_json or not sys.stderr.isatty() else LiveTable(lambda: side_stores.get("live"))
    runner = Batch(
        lambda: _worker(app_, reconnect),
        current_owner(),
        options,
        owner_alive,
        live.update if live else _printer(as_json),
        metrics=metrics,
    )
    from launcher.cli.run_cmd import cancel_on_signals

    # Set explicitly, as `run` does: a batch started from a script's background job inherits
    # SIGINT ignored, and a CI runner cancelling the job sends SIGTERM; both must stop it.
    try:
        with cancel_on_signals(grace if grace is not None else app_.config.run.grace):
            if live is None:
                summary = runner.run()
            else:
                with live:
                    summary = runner.run()
    finally:
        if stop_metrics is not None:
            stop_metrics()
        side_stores.close()
    if as_json:
        emit_json(summary.model_dump(mode="json"))
    else:
        typer.echo(summary_text(summary), err=True)
        for error in summary.errors:
            typer.echo(f"batch: error: {error}", err=True)
    if summary.errors:
        raise typer.Exit(ExitCode.FAILURE)
    if any(t.final_state != "exited" for t in summary.tasks):
        raise typer.Exit(ExitCode.RUN_FAILED)


def _plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def summary_text(summary: BatchSummary) -> str:
    """``batch: 4 tasks claimed, 4 runs started, none retried; 3 runs exited, 1 run failed``: each
    count names what it counts; the part after ``;`` only when some task's run ended."""
    retried = "none retried" if not summary.retried else f"{_plural(summary.retried, 'run')} retried"
    head = f"batch: {_plural(summary.claimed, 'task')} claimed, {_plural(summary.runs, 'run')} started, {retried}"
    ended = ", ".join(f"{_plural(count, 'run')} {state}" for state, count in summary.by_state.items())
    return f"{head}; {ended}" if ended else head


class _SideStores:
    """Coordinator connections beside the workers' (metrics scrapes, the live table's queue
    depth), opened on first use and closed when the batch ends."""

    def __init__(self, opener: Callable[[], Coordinator]) -> None:
        import threading

        self._opener = opener
        self._stores: dict[str, Coordinator] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> Coordinator:
        with self._lock:
            if name not in self._stores:
                self._stores[name] = self._opener()
            return self._stores[name]

    def close(self) -> None:
        with self._lock:
            stores, self._stores = list(self._stores.values()), {}
        for store in stores:
            store.close()


def _side_store(app_: Application) -> Coordinator:
    from launcher.adapters.store import open_coordinator

    return open_coordinator(app_.layout.state_url(app_.state_url_option), reconnect_seconds=SIDE_RECONNECT_S)


def _worker(app_: Application, reconnect_seconds: float) -> tuple[Coordinator, RunService]:
    """A coordinator connection and run service of its own for each worker thread; a PostgreSQL
    one rides out a server that is away for [coordinator] reconnect_seconds."""
    from launcher.adapters.store import open_coordinator
    from launcher.core.run import RunService

    store = open_coordinator(app_.layout.state_url(app_.state_url_option), reconnect_seconds=reconnect_seconds)
    return store, RunService(app_.run_deps(store))


def _printer(as_json: bool) -> Callable[[BatchEvent], None]:
    def emit(event: BatchEvent) -> None:
        if as_json:
            print(json.dumps({"event": event.model_dump(mode="json")}), file=sys.stderr, flush=True)
            return
        print(event_line(event), file=sys.stderr, flush=True)

    return emit


def event_line(event: BatchEvent) -> str:
    """``12:00:01 [w0] claimed  demo-3 (claim #1)``; the batch's own events (the lease heartbeat's,
    the coordinator's coming and going) say ``[batch]`` and name no task unless they concern one."""
    who = f"w{event.worker}" if event.worker >= 0 else "batch"
    task = f" {event.task_id}" if event.task_id else ""
    run = f" {event.run_id}" if event.run_id else ""
    state = f" {event.state}" if event.state else ""
    detail = f" ({event.detail})" if event.detail else ""
    stamp = event.at.astimezone().strftime("%H:%M:%S")  # local time, as a terminal's reader reads it
    return f"{stamp} [{who}] {event.kind:8}{task}{run}{state}{detail}"


class LiveTable:
    """On a terminal: one row per task, redrawn in place as events arrive (rich), under a line of
    progress: elapsed, tasks done, tasks remaining on the queue and, once some are done, an estimate
    of the time left at the pace so far."""

    DEPTH_EVERY_S = 2.0  # the queue's depth is the coordinator's: asked at most this often

    def __init__(
        self, queue_store: Callable[[], Coordinator] | None = None, clock: Callable[[], float] | None = None
    ) -> None:
        import threading
        import time

        from rich.console import Console
        from rich.live import Live

        self._clock = clock or time.monotonic
        self._started = self._clock()
        self._queue_store = queue_store
        self._depth: int | None = None
        self._depth_at: float | None = None
        self._rows: dict[str, BatchEvent] = {}
        self._coordinator: BatchEvent | None = None  # the last coordinator-lost/back, as a caption
        self._idle: BatchEvent | None = None
        self._lock = threading.Lock()
        self._live = Live(
            console=Console(stderr=True), refresh_per_second=4, transient=False, get_renderable=self._render
        )

    def __enter__(self) -> LiveTable:
        self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._live.__exit__(None, None, None)

    def update(self, event: BatchEvent) -> None:
        with self._lock:
            if event.kind == "idle":
                self._idle = event
            elif event.task_id is None:
                self._coordinator = event
            else:
                self._rows[event.task_id] = event
                self._idle = None
        self._live.refresh()

    def progress(self) -> str:
        """``elapsed 2m05s · 3 done · 2 remaining · ~1m20s left``"""
        now = self._clock()
        with self._lock:
            done = sum(1 for row in self._rows.values() if row.kind in ("finished", "skipped", "error"))
        remaining = self._remaining(now)
        elapsed = now - self._started
        parts = [f"elapsed {_duration(elapsed)}", f"{done} done"]
        if remaining is not None:
            parts.append(f"{remaining} remaining")
            if remaining and done:
                parts.append(f"~{_duration(elapsed / done * remaining)} left")
        return " · ".join(parts)

    def _remaining(self, now: float) -> int | None:
        if self._queue_store is None:
            return None
        if self._depth_at is None or now - self._depth_at >= self.DEPTH_EVERY_S:
            self._depth_at = now
            try:
                self._depth = sum(1 for t in self._queue_store().list_tasks() if t.queued)
            except Exception:  # a coordinator away: the table says nothing of it rather than stop
                self._depth = None
        return self._depth

    def _render(self) -> Table:
        from rich.table import Table

        progress = self.progress()
        with self._lock:
            lines = [progress]
            if self._idle is not None:
                lines.append(event_line(self._idle))
            if self._coordinator is not None:
                lines.append(event_line(self._coordinator))
            table = Table(title="launcher batch", caption="\n".join(lines), expand=False)
            for column in ("task", "worker", "run", "state", "detail"):
                table.add_column(column)
            for row in self._rows.values():
                state = row.state or row.kind
                table.add_row(row.task_id, f"w{row.worker}", row.run_id or "", state, (row.detail or "")[:60])
        return table


def _duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``."""
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def matrix(
    ctx: typer.Context,
    status: str = typer.Option("queued", "--status", help="`queued` (default), or a task status such as active."),
    fmt: str = typer.Option("github", "--format", help='github: one-line {"include": […]}; json: pretty list.'),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json, as every listing takes it."),
) -> None:
    """Print tasks as a CI matrix: one job per task, each running `launcher run TASK`.

    Only what is still to do: a task a live run holds (a job is on it) or that a run finished
    (exited 0) since it was queued is left out, so planning again never repeats finished work;
    a task whose runs failed stays in. `launcher queue TASK` puts a finished task back.
    """
    import time

    from launcher.core.matrix import plan_matrix

    if as_json:
        fmt = "json"
    if fmt not in ("github", "json"):
        raise typer.BadParameter(f"{fmt!r}: choose github or json", param_hint="'--format'")
    app_ = app_of(ctx).read_only()  # a look only: no state store is made where there is none
    include = [{"task": t.id, "slug": t.slug} for t in plan_matrix(app_.store, status, time.time())]
    if fmt == "github":
        typer.echo(json.dumps({"include": include}, separators=(",", ":")))
    else:
        emit_json({"include": include})

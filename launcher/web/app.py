"""The ASGI app of `launcher web`: GET-only pages over the coordinator, behind a token.

Every request opens the root's coordinator for itself (read-only: where none exists it sees an
empty one and creates nothing) and closes it: a coordinator connection is not to be shared by
two threads, and Starlette answers each request on a worker thread. Reads go through the same
paths as the CLI's: the store's queries, ``RunService.log_path`` (the stored log, redacted
when written), ``RunService.read_logs`` for egress decisions, ``results.diff`` for the diff.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from launcher.errors import LauncherError
from launcher.web import page as p
from launcher.web.page import e

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from launcher.cli.app_context import Application
    from launcher.models import RunEventRecord, RunRecord

Opener = Callable[[], "Application"]

LOG_POLL_S = 0.25  # how often a log stream looks for new bytes (as `launcher logs -f` does)
LOG_PAGE_BYTES = 256 * 1024  # the page shows the log's last this many bytes; the stream goes on from there
LOG_READ_BYTES = 1024 * 1024  # the most one stream event carries
HEARTBEAT_S = 15.0  # an SSE comment this often, so a gone browser is noticed on an idle run

# Nothing but what the page itself serves: even text that escaped escaping would not run.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
]


class TokenGate:
    """Every request's path must start with /<token>/; the rest of the path goes on to the routes.

    The token is in the path rather than in a cookie: a browser sends a cookie for 127.0.0.1 to
    every port of that host, the ports runs publish included, where an agent's own server would
    receive it. Only GET and HEAD pass: the page has no write action at all.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            return
        first, _, rest = str(scope["path"]).lstrip("/").partition("/")
        if not secrets.compare_digest(first.encode(), self.token.encode()):
            await _plain(404, "not found\n")(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            await _plain(405, "launcher web is read-only\n", allow="GET, HEAD")(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + SECURITY_HEADERS
            await send(message)

        inner = dict(scope, path="/" + rest, root_path=str(scope.get("root_path", "")) + "/" + first)
        await self.app(inner, receive, send_with_headers)


def _plain(status: int, text: str, **headers: str) -> Response:
    return PlainTextResponse(text, status_code=status, headers=headers)


def create_app(open_app: Opener, token: str, *, metrics: CollectorRegistry | None = None) -> ASGIApp:
    """The app at ``/<token>/``; ``metrics`` (a Prometheus registry) at ``/<token>/metrics``."""
    pages = _Pages(open_app, "/" + token)
    routes: list[Route | Mount] = [
        Route("/", pages.runs),
        Route("/runs/{run_id}", pages.run),
        Route("/runs/{run_id}/diff", pages.diff),
        Route("/runs/{run_id}/log.txt", pages.log_text),
        Route("/runs/{run_id}/log/events", pages.log_events),
        Route("/tasks", pages.tasks),
        Route("/tasks/{task_id}", pages.task),
        Route("/queue", pages.queue),
        Route("/static/page.css", lambda _r: Response(p.CSS, media_type="text/css")),
        Route("/static/page.js", lambda _r: Response(p.JS, media_type="text/javascript")),
    ]
    if metrics is not None:
        routes.append(Route("/metrics", _metrics_endpoint(metrics)))
    return TokenGate(Starlette(routes=routes), token)


def _metrics_endpoint(registry: CollectorRegistry) -> Callable[[Request], Response]:
    """A sync endpoint, so Starlette scrapes on a worker thread: prometheus_client's own ASGI app
    would query the coordinator on the event loop and stall every log stream meanwhile."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    def scrape(_request: Request) -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return scrape


class _Pages:
    def __init__(self, open_app: Opener, prefix: str) -> None:
        self.open_app, self.prefix = open_app, prefix

    # -- plumbing ----------------------------------------------------------------------------

    def _html(self, title: str, build: Callable[[Application], str], *, refresh: int | None = None) -> Response:
        app_ = self.open_app()
        try:
            body = build(app_)
        except LauncherError as exc:
            status = 404 if exc.exit_code == 5 else 400
            text = f"<p class=error>{e(exc.message)}</p>" + (f"<p>{e(exc.hint)}</p>" if exc.hint else "")
            return HTMLResponse(p.page(self.prefix, title, text), status_code=status)
        finally:
            app_.close()
        return HTMLResponse(p.page(self.prefix, title, body, refresh=refresh))

    def _run_link(self, run_id: str) -> str:
        return p.link(f"{self.prefix}/runs/{quote(run_id, safe='')}", run_id)

    def _task_link(self, task_id: str) -> str:
        return p.link(f"{self.prefix}/tasks/{quote(task_id, safe='')}", task_id)

    # -- runs --------------------------------------------------------------------------------

    def runs(self, request: Request) -> Response:
        from launcher.core import run_view as view
        from launcher.core.transitions import LIVE_RUN_STATES
        from launcher.models import utcnow

        q = request.query_params
        given = [f"{k}={v}" for k in view.FILTER_KEYS for v in q.getlist(k) if v] + q.getlist("filter")
        try:
            wanted = view.parse_filters(given)
        except view.FilterError as exc:
            return HTMLResponse(p.page(self.prefix, "runs", f"<p class=error>{e(exc)}</p>"), status_code=400)
        everything = q.get("all") == "1" or "state" in wanted

        def build(app_: Application) -> str:
            runs = app_.store.list_runs(states=None if everything else LIVE_RUN_STATES)
            runs = [r for r in runs if view.matches(r, wanted)]
            now = utcnow()
            columns = ["ID", "Task", "State", "Exit", "Duration", "Commits", "Result", "Denied", "Branch", "Created"]
            table = view.table_rows(runs, now)
            if any(cells.get("Ports") for cells in table):
                columns.append("Ports")  # name→http://127.0.0.1:PORT of live runs' leased ports (--port)
            rows = []
            for run, cells in zip(runs, table, strict=True):
                shown = [e(cells[c]) for c in columns]
                shown[0], shown[1] = self._run_link(run.id), self._task_link(run.task_id)
                shown[2] = f'<span class="state-{e(run.state.value)}">{e(run.state.value)}</span>'
                rows.append(shown)
            what = "runs" if everything else "live runs"
            empty = f"<p class=muted id=no-runs>no {what} match</p>" if not rows else ""
            return (
                self._filter_form(q.get("all") == "1", {k: q.get(k, "") for k in ("id", "state", "task", "repo")})
                + f"<p class=muted>{len(rows)} {what}</p>"
                + p.table([view.HEADERS.get(c, c) for c in columns], rows, table_id="runs")
                + empty
            )

        return self._html("runs", build, refresh=5)

    def _filter_form(self, all_: bool, values: dict[str, str]) -> str:
        inputs = "".join(f'<label>{e(k)} <input name="{e(k)}" value="{e(v)}"></label>' for k, v in values.items())
        checked = " checked" if all_ else ""
        return (
            f'<form class="filters" method="get" action="{self.prefix}/">{inputs}'
            f'<label><input type="checkbox" name="all" value="1"{checked}> finished too</label> '
            '<button type="submit">filter</button></form>'
        )

    def run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]

        def build(app_: Application) -> str:
            from launcher.core import run_view as view
            from launcher.core.transitions import TERMINAL_RUN_STATES
            from launcher.models import utcnow

            run = app_.store.get_run(run_id)
            cells = view.row(run, utcnow())
            facts = [(k, cells[k]) for k in view.FIELDS if cells[k]]
            events = app_.store.run_events(run.id)
            history = p.table(
                ["at", "from", "to", "detail"],
                (_event_row(ev) for ev in events),
                table_id="events",
            )
            log, offset = _log_tail(app_, run)
            base = f"{self.prefix}/runs/{quote(run.id, safe='')}"
            live = run.state not in TERMINAL_RUN_STATES
            stream = f' data-stream="{e(base)}/log/events?from={offset}"' if live else ""
            return (
                p.fields([("task", run.task_id)] + [(k, v) for k, v in facts if k != "Task"])
                + f"<p>{p.link(self.prefix + '/tasks/' + quote(run.task_id, safe=''), 'task history')} · "
                + f"{p.link(base + '/diff', 'diff')} · {p.link(base + '/log.txt', 'whole log')}</p>"
                + f"<h2>log</h2><p class=muted id=log-state>{'live' if live else 'ended'}</p>"
                + f'<pre id="log"{stream}>{e(log)}</pre>'
                + "<h2>diffstat</h2>"
                + _diff_block(app_, run.id, stat=True)
                + "<h2>egress decisions</h2>"
                + _egress_table(app_, run.id)
                + "<h2>state transitions</h2>"
                + history
            )

        return self._html(f"run {run_id}", build)

    def diff(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        return self._html(f"diff of {run_id}", lambda app_: _diff_block(app_, run_id, stat=False))

    def log_text(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        app_ = self.open_app()
        try:
            run = app_.store.get_run(run_id)
            data = _read_from(app_, run, 0, None)
        except LauncherError as exc:
            return _plain(404 if exc.exit_code == 5 else 400, exc.message + "\n")
        finally:
            app_.close()
        # text/plain with nosniff: the agent's bytes are never interpreted as HTML.
        return Response(data, media_type="text/plain; charset=utf-8")

    async def log_events(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        start = request.headers.get("last-event-id") or request.query_params.get("from") or "0"
        if not start.isdigit():
            return _plain(400, "from: a byte offset\n")
        return StreamingResponse(
            _log_stream(self.open_app, run_id, int(start)),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    # -- tasks and the queue ---------------------------------------------------------------

    def tasks(self, request: Request) -> Response:
        def build(app_: Application) -> str:
            tasks = app_.store.list_tasks()
            rows = (
                [self._task_link(t.id), e(t.status.value), e(t.repo), e(t.title[:80]), e("yes" if t.queued else "")]
                for t in tasks
            )
            return p.table(["ID", "status", "repo", "title", "queued"], rows, table_id="tasks")

        return self._html("tasks", build)

    def task(self, request: Request) -> Response:
        ref = request.path_params["task_id"]

        def build(app_: Application) -> str:
            task = app_.store.resolve_task(ref)
            history = app_.store.history(task.id)
            runs = app_.store.list_runs(task_id=task.id)
            return (
                p.fields(
                    [
                        ("id", task.id),
                        ("title", task.title),
                        ("status", task.status.value),
                        ("repo", f"{task.repo} ({task.repo_path or '-'})"),
                        ("base", task.base_ref),
                        ("command", " ".join(task.command)),
                        ("queued", "yes" if task.queued else "no"),
                    ]
                )
                + "<h2>transitions</h2>"
                + p.table(
                    ["at", "from", "to", "by", "reason"],
                    (
                        [
                            e(_at(h.at)),
                            e(h.from_status.value if h.from_status else "-"),
                            e(h.to_status.value),
                            e(h.actor),
                            e(h.reason),
                        ]
                        for h in history
                    ),
                    table_id="transitions",
                )
                + "<h2>runs</h2>"
                + p.table(
                    ["run", "state", "exit", "branch"],
                    ([self._run_link(r.id), e(r.state.value), e(r.exit_code), e(r.branch)] for r in runs),
                    table_id="task-runs",
                )
            )

        return self._html(f"task {ref}", build)

    def queue(self, request: Request) -> Response:
        import time

        def build(app_: Application) -> str:
            queued = sorted(
                (t for t in app_.store.list_tasks() if t.queued),
                key=lambda t: (t.queued_at is None, t.queued_at or t.created_at),
            )
            now = time.time()  # leases are on the coordinator's clock: the time left is approximate
            rows = []
            for t in queued:
                held = t.lease_owner is not None and t.lease_expires is not None and t.lease_expires > now
                left = f"{t.lease_expires - now:.0f}s" if held and t.lease_expires is not None else ""
                rows.append(
                    [
                        self._task_link(t.id),
                        e(t.status.value),
                        e(_at(t.queued_at) if t.queued_at else ""),
                        e(t.lease_owner if held else "waiting"),
                        e(left),
                        e(t.claims),
                    ]
                )
            return f"<p class=muted>{len(rows)} queued</p>" + p.table(
                ["task", "status", "queued", "worker", "lease left", "claims"], rows, table_id="queue"
            )

        return self._html("batch queue", build, refresh=5)


# -- reading a run's files ---------------------------------------------------------------------


def _at(when: datetime) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S")


def _event_row(ev: RunEventRecord) -> list[str]:
    source = ev.from_state.value if ev.from_state else "-"
    return [e(_at(ev.at)), e(source), e(ev.to_state.value), e(ev.detail)]


def _read_from(app_: Application, run: RunRecord, offset: int, limit: int | None) -> bytes:
    """The stored log's bytes from ``offset`` (the file launcher wrote, redacted as it was written)."""
    try:
        with open(app_.runs.log_path(run), "rb") as handle:
            handle.seek(offset)
            return handle.read() if limit is None else handle.read(limit)
    except FileNotFoundError:
        return b""


def _log_tail(app_: Application, run: RunRecord) -> tuple[str, int]:
    """The log's last LOG_PAGE_BYTES as text (control characters shown), and where it stopped."""
    from launcher.cli.terminal import TerminalText

    data = _read_from(app_, run, 0, None)
    shown = data[-LOG_PAGE_BYTES:]
    if len(shown) < len(data):
        cut = shown.find(b"\n")
        shown = shown[cut + 1 :] if cut >= 0 else shown
    return TerminalText().feed(shown), len(data)


async def _log_stream(open_app: Opener, run_id: str, offset: int) -> AsyncIterator[str]:
    """SSE: each new piece of the log as a JSON string, `id:` its end offset; `end` when the run ended.

    A poll of the stored log rather than ``read_logs(follow=True)``: that blocks a worker thread
    until the agent prints again, which a browser that went away could not interrupt.
    """
    from launcher.cli.terminal import TerminalText
    from launcher.core.transitions import TERMINAL_RUN_STATES

    app_ = await run_in_threadpool(open_app)
    text = TerminalText()
    quiet = 0.0

    def look() -> tuple[bytes, str, bool]:
        run = app_.store.get_run(run_id)  # the state first: a run seen ended has written all it will
        return _read_from(app_, run, offset, LOG_READ_BYTES), run.state.value, run.state in TERMINAL_RUN_STATES

    try:
        while True:
            try:
                data, state, ended = await run_in_threadpool(look)
            except LauncherError as exc:
                yield f"event: end\ndata: {json.dumps(exc.message)}\n\n"
                return
            if data:
                offset += len(data)
                quiet = 0.0
                yield f"id: {offset}\ndata: {json.dumps(text.feed(data))}\n\n"
                continue
            if ended:
                yield f"event: end\ndata: {json.dumps(state)}\n\n"
                return
            if quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield ": still here\n\n"
            await asyncio.sleep(LOG_POLL_S)
            quiet += LOG_POLL_S
    finally:
        await run_in_threadpool(app_.close)


def _diff_block(app_: Application, run_id: str, *, stat: bool) -> str:
    from launcher.cli.results_cmd import results_deps
    from launcher.cli.terminal import neutralise
    from launcher.core import results

    try:
        found, text = results.diff(results_deps(app_), run_id, stat=stat)
    except LauncherError as exc:
        return f"<p class=muted>{e(exc.message)}</p>"
    if not text:
        return f"<p class=muted>no changes ({e(found.branch)} is at its base)</p>"
    summary = f"{found.commits} commits, {len(found.files)} files, +{found.insertions} -{found.deletions}"
    ident = "diffstat" if stat else "diff"
    return f"<p>{e(summary)}</p><pre id={ident}>{e(neutralise(text.decode('utf-8', 'replace')))}</pre>"


def _egress_table(app_: Application, run_id: str) -> str:
    try:
        data = b"".join(chunk for _run, chunk in app_.runs.read_logs([run_id], egress=True, follow=False))
    except LauncherError as exc:
        return f"<p class=muted>{e(exc.message)}</p>"
    rows = []
    for line in data.splitlines():
        try:
            d: Any = json.loads(line)
        except ValueError:
            continue
        if not isinstance(d, dict):
            continue
        cls = ' class="deny"' if d.get("decision") == "deny" else ""
        where = f"{d.get('host') or ''}:{d.get('port') or ''}"
        decision = f"<span{cls}>{e(d.get('decision'))}</span>"
        rows.append([e(d.get("ts")), e(d.get("method") or d.get("kind")), e(where), decision])
        rows[-1] += [e(d.get("reason")), e(d.get("status"))]
    if not rows:
        return "<p class=muted>no network decisions recorded</p>"
    return p.table(["at", "request", "host", "decision", "reason", "status"], rows, table_id="egress")

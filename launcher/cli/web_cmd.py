"""`launcher web`: a read-only page over the root's coordinator (the `web` extra)."""

from __future__ import annotations

import importlib.util
import ipaddress
import secrets
import socket
import sys
from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import Application, app_of
from launcher.errors import InvalidInputError

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

# Exit 6 (invalid input), not 8: 8 says the Docker engine or an image is at fault, which a
# script would retry; a missing extra is this install being asked for what it lacks.
_MISSING = "launcher web needs the `web` extra (Starlette and uvicorn), which is not installed"
_PIP = "pip install 'worktree-launcher[web]'"


def register(app: typer.Typer) -> None:
    app.command("web")(web)


def web(
    ctx: typer.Context,
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; anything but loopback shows the page to the network."
    ),
    port: int = typer.Option(0, "--port", "-p", min=0, max=65535, help="Port to listen on (0: a free one)."),
) -> None:
    """Serve a read-only page of the runs, their live logs, diffs, egress decisions, task
    history and the batch queue, plus Prometheus metrics at /metrics.

    The URL it prints first carries a random token: every request needs it, so keep the URL
    to yourself. There is no write action: stop, rm, merge stay on the CLI.
    """
    missing = [name for name in ("starlette", "uvicorn") if importlib.util.find_spec(name) is None]
    if missing:
        raise InvalidInputError(f"{_MISSING} (missing: {', '.join(missing)})", hint=_PIP)
    import uvicorn

    from launcher.web.app import create_app

    given = app_of(ctx)
    root, state_url = str(given.root), given.state_url_option

    def open_app() -> Application:
        return Application(root, state_url).read_only()

    open_app().close()  # a root or coordinator that cannot be opened fails here, before any URL
    metrics_app = open_app()  # the scrapes' own connection, one scrape at a time (the collector locks)
    sock = _listen(host, port)
    token = secrets.token_urlsafe(24)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    typer.echo(f"http://{shown}:{bound_port}/{token}/")
    sys.stdout.flush()
    if not ipaddress.ip_address(bound_host).is_loopback:
        typer.echo(
            f"launcher: warning: listening on {bound_host}, not loopback: anyone who can reach it and "
            "has the URL sees every run's log and diff",
            err=True,
        )
    typer.echo("launcher: serving read-only; Ctrl-C stops", err=True)
    try:
        registry = _registry(metrics_app)
        config = uvicorn.Config(
            create_app(open_app, token, metrics=registry), log_level="warning", access_log=False, lifespan="off"
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        metrics_app.close()


def _registry(app_: Application) -> CollectorRegistry | None:
    try:
        from launcher.core.metrics import coordinator_registry
    except ImportError:  # pragma: no cover - metrics arrive with issue #19 item 5
        return None
    return coordinator_registry(app_.store)


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _name, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InvalidInputError(f"--host {host!r} does not resolve: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    return sock

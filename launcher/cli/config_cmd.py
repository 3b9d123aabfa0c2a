"""`launcher config show`: the root's effective settings, each with where it came from."""

from __future__ import annotations

import os

import typer

from launcher.cli.app_context import app_of, dump, emit_json

config_app = typer.Typer(help="launcher's settings for this root.", no_args_is_help=True)
# Values longer than this overflow their column instead of pushing SOURCE off every other line.
_VALUE_WIDTH = 40


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.command("show")
def show(
    ctx: typer.Context,
    keys: list[str] = typer.Argument(
        None, metavar="KEY", help="Only these settings (`run.timeout`) or sections (`run`, `agent.claude`)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print a list of {key, value, source, origin}."),
) -> None:
    """Every effective setting of the root, with its source: `flag` (--root, --state-url on this
    command line), `env` (naming the variable), `launcher.toml` (naming the file) or `default`.

    Reads only: no state store is opened and nothing is created. Secrets are not shown: a URL's
    password is `***`, a token only by the name of the variable that holds it.
    """
    from launcher.core.config_view import (
        Invocation,
        UnknownSettingError,
        effective_settings,
        render_source,
        render_value,
        section_of,
        select,
    )

    app_ = app_of(ctx)
    invocation = Invocation(
        root_option=ctx.find_root().params.get("root"),
        state_url_option=app_.state_url_option,
        environ=dict(os.environ),
    )
    settings = effective_settings(app_.root, app_.config, invocation, redact_state_url=_redact_state_url)
    try:
        settings = select(settings, keys or [])
    except UnknownSettingError as exc:
        raise typer.BadParameter(str(exc), param_hint="KEY") from None
    if as_json:
        emit_json(dump(settings))
        return
    rows = [(s.key, render_value(s.value), render_source(s), section_of(s.key)) for s in settings]
    key_width = max([3, *(len(r[0]) for r in rows)])
    value_width = min(_VALUE_WIDTH, max([5, *(len(r[1]) for r in rows)]))
    typer.echo(f"{'KEY':<{key_width}}  {'VALUE':<{value_width}}  SOURCE")
    previous: str | None = None
    for key, value, source, section in rows:
        if previous is not None and section != previous:
            typer.echo("")
        previous = section
        typer.echo(f"{key:<{key_width}}  {value:<{value_width}}  {source}")


def _redact_state_url(url: str) -> str:
    """The store's own redaction (a password in the netloc or the query); SQLite URLs have none,
    and they are the common case: no PostgreSQL driver is imported for them."""
    if url.startswith("sqlite:///"):
        return url
    from launcher.adapters.store.postgres import redact_url

    return redact_url(url)

"""`launcher agent list`: the agent profiles (built in and from launcher.toml) and where each came from."""

from __future__ import annotations

import shlex

import typer

from launcher.cli.app_context import app_of, emit_json, table

agent_app = typer.Typer(help="The coding agents runs can use (--agent NAME).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(agent_app, name="agent")


@agent_app.command("list")
def list_(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the profiles as JSON."),
) -> None:
    """Each agent profile: its image, its command, and where it came from (built-in, launcher.toml, or
    built-in overridden by launcher.toml). `*` marks [agent] default.

    In a command, `{prompt}` is the prompt as one argument and `{prompt_file}` the path of its
    read-only file in the run (/launcher/prompt.md).
    """
    from launcher.core import agents

    app_ = app_of(ctx)
    entries = agents.profiles(app_.config.agent)
    if as_json:
        emit_json([entry.model_dump(mode="json") for entry in entries])
        return
    rows = [
        [
            ("* " if entry.default else "  ") + entry.name,
            entry.source,
            entry.profile.image or f"({app_.config.run.image})",
            shlex.join(entry.profile.command) or "-",
        ]
        for entry in entries
    ]
    typer.echo(table(rows, ["NAME", "FROM", "IMAGE", "COMMAND"]))
    for entry in entries:
        keys = [f"{name} -> {upstream}" for name, upstream in entry.profile.api_keys.items()]
        extra = f" (keys from launcher's env, added by the proxy: {', '.join(keys)})" if keys else ""
        if entry.profile.description or extra:
            typer.echo(f"{entry.name}: {entry.profile.description}{extra}", err=True)

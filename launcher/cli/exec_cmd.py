"""`launcher exec` and `launcher shell`: into a live run, as its agent is (same uid, same profile,
same network, same environment, in its worktree)."""

from __future__ import annotations

import sys

import typer

from launcher.cli.app_context import app_of
from launcher.errors import ExitCode


def register(app: typer.Typer) -> None:
    app.command("exec", context_settings={"allow_interspersed_args": False})(exec_)
    app.command("shell")(shell)


def exec_(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="A running run's ID (see `launcher ps`)."),
    command: list[str] = typer.Argument(..., metavar="-- CMD [ARG…]", help="The command to run in the run."),
) -> None:
    """Run a command inside a live run's container, as the run's uid, in its worktree (/workspace).

    It gets what the agent has: the run's environment, security profile and network (no more egress
    than the agent). Its output streams to stdout and stderr as it comes; its exit status is
    the command's, as with `docker exec`. Launcher's own failures: 3 when the run is not running,
    5 when there is no such run, 8 when the engine fails.

    \b
      launcher exec demo-1.1 -- git log --oneline -3
      launcher exec demo-1.1 -- sh -c 'ls .case/'
    """

    def out(stream: int, chunk: bytes) -> None:
        target = sys.stdout.buffer if stream == 1 else sys.stderr.buffer
        target.write(chunk)
        target.flush()

    # Everything after the run ID is the command, options included; a leading `--` only separates.
    argv = list(command[1:] if command[:1] == ["--"] else command)
    if not argv:
        typer.echo("launcher: error: no command after `--`; e.g. launcher exec RUN -- git status", err=True)
        raise typer.Exit(ExitCode.USAGE)
    raise typer.Exit(app_of(ctx).runs.exec_in(run_id, argv, out))


def shell(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="A running run's ID (see `launcher ps`)."),
) -> None:
    """An interactive shell (bash if the image has it) inside a live run, as the run's uid, in its
    worktree: what `launcher exec` gives, on this terminal. Needs a terminal and the docker
    command-line client; exits with the shell's status."""
    if not sys.stdin.isatty():
        typer.echo(
            "launcher: error: `launcher shell` needs a terminal; without one use `launcher exec RUN -- CMD…`", err=True
        )
        raise typer.Exit(ExitCode.USAGE)
    raise typer.Exit(app_of(ctx).runs.shell(run_id))

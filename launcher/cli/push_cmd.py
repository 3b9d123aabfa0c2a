"""`launcher push RUN`: the host publishes a run's branch (and its pull request)."""

from __future__ import annotations

import typer

from launcher.cli.app_context import app_of, emit_json


def register(app: typer.Typer) -> None:
    app.command("push")(push)


def push(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID (see `launcher ps --all`)."),
    remote: str = typer.Option(
        None, "--remote", metavar="NAME|URL", help="Push here (default: [publish] remote, origin)."
    ),
    pr: bool = typer.Option(
        None, "--pr/--no-pr", help="Then open the task attempt's pull request, or update it (default: [publish] pr)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Push a finished run's branch, and what its harvest kept, from the host with the host's credentials.

    The branch goes to refs/heads/<branch>; the run's kept refs (uncommitted work, other branches,
    tags, stashes) to refs/launcher/runs/<run-id>/… on the remote. Each remote ref is
    compare-and-set: absent, or where launcher last pushed it; a ref someone else moved is left
    alone and reported. Pushing again what is there already changes nothing. Exit status: 0
    when the remote holds the run's work (and its pull request is open); 18 when the push or
    the pull request failed (the message says why; the branch stays local).

    Examples:

    \b
      launcher push demo-1.1
      launcher push demo-1.1 --remote https://git.example.com/team/demo.git
      launcher push demo-1.1 --pr
    """
    from launcher.adapters.git_publish import GitPublisher
    from launcher.cli.run_cmd import run_view
    from launcher.core.run.publish import publish_problem, publish_run, push_settings
    from launcher.errors import ExitCode

    app_ = app_of(ctx)
    deps = app_.runs.deps
    settings = push_settings(app_.config.publish, remote=remote, pr=pr)
    record = publish_run(deps, deps.store.get_run(run_id), settings, GitPublisher())
    problem = publish_problem(record)
    code = ExitCode.PUBLISH_FAILED if problem else ExitCode.OK
    if as_json:
        emit_json(run_view(record))
        raise typer.Exit(code)
    if problem:
        typer.echo(f"launcher: {problem}", err=True)
        raise typer.Exit(code)
    published = record.details.publish
    assert published is not None
    if not published.pushed:
        typer.echo(f"{record.id}: nothing to push (no commits on {record.branch}, nothing kept)")
        return
    if published.ref:
        typer.echo(f"{record.id}: {published.ref} at {(published.sha or '')[:12]} on {published.remote}")
    for ref in sorted(published.refs or {}):
        typer.echo(f"{record.id}: kept {ref} on {published.remote}")
    if published.pull_request is not None:
        pull = published.pull_request
        typer.echo(f"{record.id}: pull request #{pull.number} {pull.action}: {pull.url}")

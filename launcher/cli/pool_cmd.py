"""`launcher pool`: warm slots that let runs start without a checkout or a container start."""

from __future__ import annotations

import typer

from launcher.cli.app_context import app_of, emit_json, table

pool_app = typer.Typer(
    help=(
        "Warm pools: worktrees checked out and containers started ahead of time. A run whose "
        "repository, image and network kind match takes a ready slot (never one another run took) "
        "and starts without waiting for a checkout or a container start. Opt-in; `gc` collects "
        "slots whose warmer died, `pool drain` removes the rest."
    ),
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(pool_app, name="pool")


@pool_app.command("warm")
def warm(
    ctx: typer.Context,
    repo: str = typer.Option(..., "--repo", metavar="PATH|NAME", help="Repository the slots serve (as for tasks)."),
    size: int = typer.Option(..., "--size", min=0, max=64, help="Ready slots wanted; only the missing ones are made."),
    image: str = typer.Option(None, "--image", metavar="IMAGE", help="Agent image (default: launcher.toml's)."),
    network: str = typer.Option(
        None,
        "--network",
        metavar="none|allowlist|open",
        help="Network mode of the runs that will take the slots (default: launcher.toml's). allowlist and "
        "open share slots: the run's own policy is given to the proxy when it takes one.",
    ),
    base_ref: str = typer.Option(
        None, "--base", metavar="REF", help="What to check out (default: [run].base_ref); runs reset to their own."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Top the pool for a repository up to --size ready slots.

    Each slot holds a checked-out worktree, a started container (blocked until a run takes it)
    and, unless --network none, a network the egress proxy already serves. A slot serves one
    run; run `pool warm` again (a cron job, a CI step) to refill. Ready slots no run could take
    any more (the image was rebuilt, launcher.toml's limits changed) are removed on the way.
    Exit status 1 if a slot could not be warmed.

    \b
      launcher pool warm --repo ../api --size 4
      launcher pool warm --repo api --size 2 --network none --json
    """
    from launcher.core.pool import PoolService, WarmRequest
    from launcher.core.run.plan import effective_network_mode

    app_ = app_of(ctx)
    ref = app_.repositories.resolve(repo)
    assert ref.path is not None
    config = app_.config
    mode = effective_network_mode(network, config.run, config.network)
    request = WarmRequest(
        repo_path=ref.path,
        project=ref.name,
        size=size,
        image=image or config.run.image,
        network="none" if mode == "none" else "proxied",
        base_ref=base_ref or config.run.base_ref,
    )
    report = PoolService(app_.runs.deps).warm(request, progress=lambda line: typer.echo(f"launcher: {line}", err=True))
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        typer.echo(f"{report.ready_after} slot(s) ready for {ref.path} (warmed {len(report.warmed)})")
        if report.superseded:
            typer.echo(f"removed {len(report.superseded)} slot(s) made for another image or other limits")
        for failure in report.failed:
            typer.echo(f"failed: {failure}", err=True)
    if report.failed:
        raise typer.Exit(1)


@pool_app.command("ls")
def ls(
    ctx: typer.Context,
    as_json: bool = typer.Option(False, "--json", help="Print the slots as JSON."),
) -> None:
    """List ready and warming slots."""
    from launcher.core.pool import PoolService

    views = PoolService(app_of(ctx).read_only().runs.deps).list()
    if as_json:
        emit_json([v.model_dump(mode="json") for v in views])
        return
    if not views:
        typer.echo("no pool slots")
        return
    rows = [
        [v.id, v.state, v.repo or "", v.network or "", (v.base_sha or "")[:12], v.image or "", str(v.uid or "")]
        for v in views
    ]
    typer.echo(table(rows, ["SLOT", "STATE", "REPOSITORY", "NETWORK", "BASE", "IMAGE", "UID"]))


@pool_app.command("drain")
def drain(
    ctx: typer.Context,
    repo: str = typer.Option(None, "--repo", metavar="PATH|NAME", help="Only this repository's slots."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Remove ready slots (their containers, networks and worktrees). Slots runs took are theirs."""
    from launcher.core.pool import PoolService

    app_ = app_of(ctx)
    path = app_.repositories.resolve(repo).path if repo else None
    report = PoolService(app_.runs.deps).drain(path)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        typer.echo(f"removed {len(report.removed)} slot(s)")
        for error in report.errors:
            typer.echo(f"error: {error}", err=True)
    if report.errors:
        raise typer.Exit(1)

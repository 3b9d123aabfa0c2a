"""`launcher doctor`: is this machine ready for runs? One line per check, a hint for each failure."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import app_of, dump, emit_json

if TYPE_CHECKING:
    from launcher.core.doctor import DoctorSetup
    from launcher.models import CheckResult

_MARKS = {"ok": "ok", "warn": "warn", "fail": "FAIL", "skip": "skip"}


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


def doctor(
    ctx: typer.Context,
    as_json: bool = typer.Option(
        False, "--json", help="Print a list of {name, status, detail, hint, blocking} (statuses ok, warn, fail, skip)."
    ),
    quick: bool = typer.Option(False, "--quick", help="Leave out the checks that start a container."),
    skip: list[str] = typer.Option(
        [], "--skip", metavar="NAME", help="Leave out the check NAME (repeatable; the names are listed above)."
    ),
    timeout: float = typer.Option(
        30.0, "--timeout", min=1, metavar="SECONDS", help="The longest any one check may take."
    ),
) -> None:
    """Check that runs can start here, one line per check: `ok`, `warn` (runs work; something
    deserves a look) or `FAIL` with a hint; `skip` when a check it depends on failed.

    \b
    config        launcher.toml parses; [network] allow_private, [agent] default are allowed
    case-root     the case root, .launcher/ and the worktrees folder take a file
    coordinator   the state store answers; its schema version against this launcher's
                  (read only: nothing is created or migrated)
    disk          free space under the root against [run] disk_reserve and [run] disk
    git-host      the host's git (2.29 needed; 2.40 for merge and apply)
    engine        Docker answers: version, API version, storage driver, [run] runtime
    agent-image   the default agent image is present and is the build of its context's
                  content hash (launcher/NAME:<hash>) when the context is here
    proxy-image   the same for [network] proxy_image
    git-image     git runs in the agent image as a run's uid, on a run's profile
    home-tmp      $HOME and /tmp writable and executable there
    egress-proxy  [network] egress_network exists; the proxy starts (briefly, on a
                  throwaway internal network; both removed after)
    allowlist     [network] allow and presets (and [agent] default's) resolve, on this
                  host, to addresses the proxy accepts: FAIL when it would refuse one,
                  warn when one does not resolve

    Each check has --timeout seconds: a hung engine or resolver fails its check, not doctor.

    Exit status: 0 when nothing blocks runs (warnings included); 1 when a check failed that
    stops runs (a proxy failure blocks only when [network] mode is not none); 2 for a usage error.
    """
    from launcher.adapters.doctor_host import HostDoctor
    from launcher.core.doctor import CHECK_NAMES, Doctor, exit_code

    unknown = sorted(set(skip) - set(CHECK_NAMES))
    if unknown:
        raise typer.BadParameter(
            f"no check {', '.join(unknown)}; checks: {', '.join(CHECK_NAMES)}", param_hint="--skip"
        )
    doctor_ = Doctor(_setup(ctx), HostDoctor(), timeout=timeout, skip=skip, quick=quick)
    width = max(len(name) for name in CHECK_NAMES)

    def show(result: CheckResult) -> None:
        typer.echo(f"{_MARKS[result.status]:<4}  {result.name:<{width}}  {result.detail}")
        if result.hint and result.status in ("warn", "fail"):
            typer.echo(f"{'':<4}  {'':<{width}}  hint: {result.hint}")

    results = doctor_.run(None if as_json else show)
    code = exit_code(results)
    if as_json:
        emit_json(dump(results))
    else:
        counts = {status: sum(1 for r in results if r.status == status) for status in _MARKS}
        said = ", ".join(f"{n} {_MARKS[s]}" for s, n in counts.items() if n)
        blocking = [r.name for r in results if r.blocking]
        tail = f"; runs are blocked by: {', '.join(blocking)}" if blocking else "; nothing blocks runs"
        typer.echo(f"{len(results)} checks: {said}{tail}")
    raise typer.Exit(code)


def _setup(ctx: typer.Context) -> DoctorSetup:
    """The root, its configuration and its state URL, each or why it could not be had."""
    from launcher.core.doctor import DoctorSetup
    from launcher.errors import LauncherError

    app = app_of(ctx)
    try:
        root = app.root
    except LauncherError as exc:
        return DoctorSetup(root_error=exc)
    try:
        config = app.config
    except LauncherError as exc:
        return DoctorSetup(root=root, config_error=exc)
    from launcher.settings import Layout

    return DoctorSetup(root=root, config=config, state_url=Layout(root, config).state_url(app.state_url_option))

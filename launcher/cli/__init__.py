"""launcher's command line: parses, calls a core service, prints. Nothing else.

Exit codes live in launcher.errors.ExitCode and are documented in the README.
"""

from __future__ import annotations

import atexit
import contextlib
import faulthandler
import json
import os
import signal
import sys
import threading
from typing import NoReturn

# pydantic scans installed packages for plugins on first use (20-30 ms of every command);
# launcher uses none. setdefault: a user who wants plugins can still set it.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from launcher.cli import (
    agent_cmd,
    batch_cmd,
    config_cmd,
    detach,
    doctor_cmd,
    exec_cmd,
    gc_cmd,
    image_cmd,
    import_cmd,
    init_cmd,
    paths_cmd,
    pool_cmd,
    prune_cmd,
    ps_cmd,
    push_cmd,
    results_cmd,
    run_cmd,
    stop_cmd,
    task_cmd,
    top_cmd,
    wait_cmd,
    web_cmd,
)
from launcher.cli.app_context import Application
from launcher.errors import ExitCode, HostStorageError, LauncherError

app = typer.Typer(
    name="launcher",
    help=(
        "Run coding agents side by side without letting them trample each other: every run "
        "gets its own git worktree and branch, its own container, and every shared change goes "
        "through one coordinator as a compare-and-set."
    ),
    epilog=(
        "Faster starts: with LAUNCHER_SERVICE=on, `launcher` hands each command to a service of "
        'yours that has launcher loaded already (~0.3 s sooner; see the README, "The launch service").'
    ),
    no_args_is_help=True,
    # --install-completion / --show-completion: typer detects the shell (bash, zsh, fish, PowerShell).
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def version() -> str:
    """The installed distribution's version; the package's own when it is not installed (a checkout)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("worktree-launcher")
    except PackageNotFoundError:
        from launcher import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"launcher {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    _version: bool = typer.Option(
        False,
        "--version",
        is_eager=True,
        expose_value=False,
        callback=_print_version,
        help="Print launcher's version and exit.",
    ),
    root: str = typer.Option(
        None,
        "--root",
        metavar="PATH",
        help="Case root (default: $CASE_ROOT, else the current git checkout's top level).",
    ),
    state_url: str = typer.Option(
        None,
        "--state-url",
        metavar="URL",
        help="Coordinator URL (default: $LAUNCHER_STATE_URL, else SQLite at <root>/.launcher/state.db).",
    ),
) -> None:
    ctx.obj = Application(root, state_url)
    ctx.call_on_close(ctx.obj.close)


init_cmd.register(app)
task_cmd.register(app)
paths_cmd.register(app)
image_cmd.register(app)
run_cmd.register(app)
ps_cmd.register(app)
stop_cmd.register(app)
exec_cmd.register(app)
gc_cmd.register(app)
detach.register(app)
batch_cmd.register(app)
pool_cmd.register(app)
import_cmd.register(app)
push_cmd.register(app)
results_cmd.register(app)
prune_cmd.register(app)
agent_cmd.register(app)
wait_cmd.register(app)
doctor_cmd.register(app)
config_cmd.register(app)
top_cmd.register(app)
web_cmd.register(app)


def wants_json(args: list[str]) -> bool:
    """--json among launcher's own options: what follows `--` is the agent's command, not ours."""
    own = args[: args.index("--")] if "--" in args else args
    return "--json" in own


def main(argv: list[str] | None = None) -> None:
    """The console script's entry (``argv`` None: this process is launcher's own), or a caller's
    in-process call with its arguments."""
    args = list(sys.argv[1:] if argv is None else argv)
    Application.own_process = argv is None
    if argv is not None:
        _run(args)
        return
    try:
        _run(args)
    except SystemExit as exc:
        _leave(exc.code)
    _leave(0)


def _run(args: list[str]) -> None:
    # `kill -USR1 <pid>` prints every thread's stack to stderr: what a launcher that seems stuck
    # (a batch, a run's supervisor) is waiting for, without stopping it.
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        # In-process callers (tests) may have put something that is no file in sys.stderr.
        with contextlib.suppress(OSError, ValueError, AttributeError):
            faulthandler.register(signal.SIGUSR1, file=sys.stderr.fileno(), all_threads=True)
    try:
        # typer exits by itself on success, on usage errors (2) and on typer.Exit; only
        # launcher's own errors reach this boundary, which maps them to their exit codes.
        app(args=args, prog_name="launcher")
    except LauncherError as exc:
        _fail(exc, args)
    except OSError as exc:
        # An adapter that missed one (a full disk, a folder without permission): still an
        # error a user can act on, with the documented exit code, not a traceback.
        _fail(HostStorageError.of(exc, "complete the command"), args)
    except KeyboardInterrupt:
        print("launcher: interrupted", file=sys.stderr)
        sys.exit(ExitCode.INTERRUPTED)


def _leave(code: str | int | None) -> NoReturn:
    """End launcher's own process without the interpreter's teardown of its modules and objects
    (about 0.1 s of every launch here: docs/performance.md), once nothing is left that the
    teardown would wait for or flush: exit handlers run, stdio is flushed, files and connections
    are closed by their owners before this (`with`, Application.close). A live thread that is no
    daemon (an executor's worker) sends it the normal way, which waits for it; so does a profiler
    or tracer (`python -m cProfile -m launcher`, a debugger), which writes what it found after
    launcher returns."""
    main_thread = threading.main_thread()
    if any(t is not main_thread and not t.daemon and t.is_alive() for t in threading.enumerate()):
        sys.exit(code)
    if sys.getprofile() is not None or sys.gettrace() is not None:
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("why"): said on stderr, status 1, as the interpreter does
        print(code, file=sys.stderr)
        status = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _fail(exc: LauncherError, args: list[str]) -> NoReturn:
    if wants_json(args):
        payload = {"error": {"code": exc.code, "message": exc.message, "hint": exc.hint}}
        print(json.dumps(payload, indent=2))
    print(f"launcher: error: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)

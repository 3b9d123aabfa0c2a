"""`launcher run`, `ps`, `logs`, `stop`, `rm`, `gc`: isolated runs and their lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from launcher.cli.app_context import Application, app_of, dump, emit_json, table
from launcher.errors import ExitCode

if TYPE_CHECKING:
    from launcher.core.runs import RunRequest
    from launcher.models import RunRecord

EXIT_BY_STATE = {
    "exited": ExitCode.OK,
    "failed": ExitCode.RUN_FAILED,
    "timed-out": ExitCode.RUN_TIMED_OUT,
    "cancelled": ExitCode.RUN_CANCELLED,
    "lost": ExitCode.RUN_LOST,
}


def register(app: typer.Typer) -> None:
    app.command("run")(run)
    app.command("ps")(ps)
    app.command("logs")(logs)
    app.command("stop")(stop)
    app.command("rm")(rm)
    app.command("gc")(gc)
    app.command("run-supervisor", hidden=True)(run_supervisor)


def run_view(run: RunRecord) -> dict[str, Any]:
    data: dict[str, Any] = dump(run)
    data["log"] = run.details.get("log")
    egress = run.details.get("egress") or {}
    data["egress"] = {k: egress.get(k) for k in ("decisions", "allowed", "denied", "log")} if egress else None
    return data


def _request(task: str, command: list[str], network: str | None, **options: Any) -> RunRequest:
    from launcher.core.netpolicy import normalise_mode
    from launcher.core.runs import RunRequest

    mode = normalise_mode(network) if network is not None else None
    return RunRequest(task=task, command=command, network=mode, **{k: v for k, v in options.items() if v is not None})


def run(
    ctx: typer.Context,
    args: list[str] = typer.Argument(
        None, metavar="TASK_ID [-- COMMAND…]", help="The task to run and, after --, the agent command."
    ),
    repo: str = typer.Option(
        None, "--repo", metavar="PATH|NAME", help="Create the task in this repository first (with --title)."
    ),
    title: str = typer.Option(None, "--title", metavar="TEXT", help="Title of the task to create (with --repo)."),
    image: str = typer.Option(
        None, "--image", metavar="IMAGE", help="Agent image (default: the task's, else launcher.toml's)."
    ),
    timeout: float = typer.Option(
        None, "--timeout", metavar="SECONDS", help="Seconds before the agent is killed (state timed-out)."
    ),
    detach: bool = typer.Option(False, "--detach", "-d", help="Start in the background and print the run ID."),
    keep_worktree: bool = typer.Option(
        None,
        "--keep-worktree/--remove-worktree",
        help="Keep the run's worktree afterwards (the branch is always kept).",
    ),
    secret: list[str] = typer.Option(
        None,
        "--secret",
        help="Pass a secret as an env var: NAME (from launcher's env) or NAME=FILE. Repeatable.",
    ),
    network: str = typer.Option(
        None,
        "--network",
        metavar="none|allowlist|open",
        help="allowlist (default): only hosts named by --allow/--preset/launcher.toml, through launcher's "
        "proxy; open: any public host through the proxy; none: no network at all. bridge means open.",
    ),
    allow: list[str] = typer.Option(
        None,
        "--allow",
        metavar="HOST[:PORT]",
        help="Let the run reach HOST (exact, or *.SUFFIX for names under SUFFIX; no port: 80 and 443). Repeatable.",
    ),
    preset: list[str] = typer.Option(
        None,
        "--preset",
        metavar="NAME",
        help="Allow a named host list: pypi, debian, npm, github, anthropic, openai, or one from launcher.toml.",
    ),
    api_key: list[str] = typer.Option(
        None,
        "--api-key",
        metavar="NAME=UPSTREAM",
        help="e.g. ANTHROPIC_API_KEY=https://api.anthropic.com: the proxy adds the key from launcher's env to "
        "requests for UPSTREAM; the agent gets NAME as a placeholder and *_BASE_URL pointing at the proxy.",
    ),
    runtime: str = typer.Option(None, "--runtime", metavar="RUNTIME", help="OCI runtime, e.g. runsc (gVisor)."),
    sparse: list[str] = typer.Option(
        None,
        "--sparse",
        metavar="DIR",
        help="Check out only this folder (and the top-level files), git's cone mode; repeatable. For big "
        "repositories: files outside stay in the branch, untouched. Not with --keep-worktree.",
    ),
    use_pool: bool = typer.Option(
        True,
        "--pool/--no-pool",
        help="Take a warm slot from `launcher pool warm` when one matches (repository, image, network kind).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the finished run as JSON (agent output goes to the log only)."
    ),
) -> None:
    """Run a task's agent in its own worktree, branch and container.

    Exit status: 0 when the agent exited 0; 10 failed, 11 timed out, 12 cancelled, 13 lost.

    Examples:

    \b
      launcher run demo-1 -- bash -lc 'make test'
      launcher run demo-1 --keep-worktree --timeout 600
      launcher run --repo ../api --title "Bump deps" -- ./agent.sh
      launcher run demo-1 --preset pypi --allow git.example.com -- pip install -e .
      launcher run demo-1 --api-key ANTHROPIC_API_KEY=https://api.anthropic.com -- claude -p "…"
      launcher run big-7 --sparse services/api --sparse libs/common -- ./agent.sh
    """
    from launcher.adapters.procinfo import current_owner
    from launcher.errors import InvalidInputError

    app_ = app_of(ctx)
    items = list(args or [])
    if repo or title:
        if not (repo and title):
            raise InvalidInputError("--repo and --title go together: they create the task to run")
        task_ref = _create_task(app_, repo, title, image, items)
        command: list[str] = []
    else:
        if not items:
            raise InvalidInputError("name a task to run (TASK_ID), or create one with --repo and --title")
        task_ref, command = items[0], items[1:]
    request = _request(
        task_ref,
        command,
        network,
        image=image,
        timeout=timeout,
        keep_worktree=keep_worktree,
        secrets=secret,
        allow=allow,
        presets=preset,
        api_keys=api_key,
        runtime=runtime,
        pool=use_pool,
        sparse=sparse,
    )
    if detach:
        run_id = _spawn_supervisor(app_, request)
        record = app_.store.get_run(run_id)
        if as_json:
            emit_json(run_view(record))
        else:
            typer.echo(run_id)
        return
    service = app_.runs
    plan = service.plan(request, dict(os.environ))
    record = service.create(plan, current_owner())
    if not as_json:
        typer.echo(f"launcher: run {record.id} on branch {record.branch}", err=True)
    echo = None if as_json else _echo
    record = service.execute(plan, record, echo=echo)
    _report(record, as_json)


def _echo(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _create_task(app_: Application, repo: str, title: str, image: str | None, command: list[str]) -> str:
    repo_ref = app_.resolve_repo(repo)
    app_.check_base(repo_ref, "HEAD")
    app_.reconcile(full=False)
    return app_.tasks.create(repo_ref, title, image=image, command=command).id


def _report(record: RunRecord, as_json: bool) -> None:
    if as_json:
        emit_json(run_view(record))
    else:
        harvest = record.details.get("harvest") or {}
        commits = len(harvest.get("commits") or [])
        code = "" if record.exit_code is None else f", exit {record.exit_code}"
        typer.echo(
            f"launcher: run {record.id} {record.state.value}{code}; {commits} commit(s) on {record.branch}",
            err=True,
        )
        if record.details.get("oom_killed"):
            limit = record.details.get("memory_limit")
            typer.echo(f"launcher: the agent was killed for running out of memory (limit {limit})", err=True)
        egress = record.details.get("egress") or {}
        if egress.get("denied") or egress.get("allowed"):
            typer.echo(
                f"launcher: network: reached {', '.join(egress.get('allowed') or []) or 'nothing'}; "
                f"refused {', '.join(egress.get('denied') or []) or 'nothing'} (launcher logs --egress {record.id})",
                err=True,
            )
        for problem in record.details.get("errors") or []:
            typer.echo(f"launcher: {problem}", err=True)
        changes = record.details.get("task_changes") or {}
        for refused in changes.get("refused") or []:
            typer.echo(f"launcher: refused task change: {refused}", err=True)
    raise typer.Exit(EXIT_BY_STATE.get(record.state.value, ExitCode.FAILURE))


def _spawn_supervisor(app_: Application, request: RunRequest) -> str:
    """A detached process owns the run from its creation, so gc can tell if it dies."""
    from launcher.errors import LauncherError, RunError

    argv = [sys.executable, "-m", "launcher", "--root", str(app_.root)]
    if app_.state_url_option:
        argv += ["--state-url", app_.state_url_option]
    proc = subprocess.Popen(
        [*argv, "run-supervisor"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    proc.stdin.write(request.model_dump_json().encode())
    proc.stdin.close()
    line = proc.stdout.readline()
    proc.stdout.close()
    try:
        answer = json.loads(line or b"{}")
    except json.JSONDecodeError:
        answer = {}
    if "run_id" in answer:
        return str(answer["run_id"])
    proc.wait(timeout=30)
    error = answer.get("error") or {}
    exc = LauncherError(
        error.get("message", f"the run supervisor exited with {proc.returncode}"), hint=error.get("hint")
    )
    exc.exit_code = int(answer.get("exit_code", ExitCode.FAILURE))
    exc.code = str(error.get("code", RunError.code))
    raise exc


def run_supervisor(ctx: typer.Context) -> None:
    """Internal: own a detached run. Reads a RunRequest as JSON on stdin."""
    from launcher.adapters.procinfo import current_owner
    from launcher.core.runs import RunRequest
    from launcher.errors import LauncherError

    app_ = app_of(ctx)
    try:
        request = RunRequest.model_validate_json(sys.stdin.read())
        service = app_.runs
        plan = service.plan(request, dict(os.environ))
        record = service.create(plan, current_owner())
    except LauncherError as exc:
        print(
            json.dumps(
                {
                    "error": {"code": exc.code, "message": exc.message, "hint": exc.hint},
                    "exit_code": exc.exit_code,
                }
            )
        )
        raise typer.Exit(exc.exit_code) from exc
    print(json.dumps({"run_id": record.id}), flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    record = service.execute(plan, record, echo=None)
    raise typer.Exit(EXIT_BY_STATE.get(record.state.value, ExitCode.FAILURE))


def ps(
    ctx: typer.Context,
    all_: bool = typer.Option(False, "--all", "-a", help="Include finished runs."),
    as_json: bool = typer.Option(False, "--json", help="Print runs as JSON."),
) -> None:
    """List live runs (all runs with --all)."""
    from launcher.core.transitions import LIVE_RUN_STATES

    app_ = app_of(ctx)
    runs = app_.store.list_runs(states=None if all_ else LIVE_RUN_STATES)
    if as_json:
        emit_json([run_view(r) for r in runs])
        return
    if not runs:
        typer.echo("no runs" if all_ else "no live runs (see --all)")
        return
    rows = [
        [
            r.id,
            r.task_id[:40],
            r.state.value,
            "" if r.exit_code is None else str(r.exit_code),
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.branch,
        ]
        for r in runs
    ]
    typer.echo(table(rows, ["RUN", "TASK", "STATE", "EXIT", "CREATED", "BRANCH"]))


def logs(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID (see `launcher ps`)."),
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing until the run ends."),
    egress: bool = typer.Option(
        False,
        "--egress",
        help="Print the run's network decisions instead: one JSON line per host it tried to reach "
        "(decision allow|deny, reason, status).",
    ),
) -> None:
    """Print a run's log (agent output, secrets redacted), or with --egress what it tried to reach."""
    from launcher.core.transitions import TERMINAL_RUN_STATES
    from launcher.errors import NotFoundError

    app_ = app_of(ctx)
    record = app_.store.get_run(run_id)
    paths = app_.runs.paths(record)
    live_egress_log = app_.layout.egress_dir / "logs" / f"{record.id}.jsonl"

    def current_path() -> Path:
        if not egress:
            return paths.log
        # The proxy appends while the run lives; settling moves the file to the run's record.
        settled = paths.record / "egress.jsonl"
        return settled if settled.exists() or not live_egress_log.exists() else live_egress_log

    poll_seconds = 0.2
    offset = 0
    while True:
        try:
            with open(current_path(), "rb") as handle:
                handle.seek(offset)
                data = handle.read()
        except FileNotFoundError:
            data = b""
            if not follow and record.state in TERMINAL_RUN_STATES:
                what = "network decision log (it made no requests, or ran with --network none)" if egress else "log"
                raise NotFoundError(f"run {run_id} has no {what}") from None
        if data:
            offset += len(data)
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        if not follow or record.state in TERMINAL_RUN_STATES:
            return
        time.sleep(poll_seconds)  # a log file has no change notification that works everywhere
        record = app_.store.get_run(run_id)


def stop(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Stop a live run: its container is killed and the run recorded as cancelled."""
    from launcher.adapters.procinfo import owner_alive
    from launcher.core.transitions import LIVE_RUN_STATES

    app_ = app_of(ctx)
    store = app_.store
    record = store.update_run(run_id, expected=LIVE_RUN_STATES, cancel_requested=True)
    if record.container_id:
        app_.runs.env.sandbox.kill(record.container_id)
    if owner_alive(record.owner) is False:
        record = app_.runs.settle_record(record, "cancelled", None)
    else:
        record = _await_terminal(app_, run_id, timeout=120)
    if as_json:
        emit_json(run_view(record))
    else:
        typer.echo(f"{record.id}: {record.state.value}")


def _await_terminal(app_: Application, run_id: str, timeout: float) -> RunRecord:
    from launcher.core.transitions import TERMINAL_RUN_STATES

    deadline = time.monotonic() + timeout
    record = app_.store.get_run(run_id)
    while record.state not in TERMINAL_RUN_STATES and time.monotonic() < deadline:
        time.sleep(0.1)  # the owning process records the end; nothing to block on across processes
        record = app_.store.get_run(run_id)
    return record


def rm(
    ctx: typer.Context,
    run_id: str = typer.Argument(..., help="Run ID."),
    force: bool = typer.Option(False, "--force", "-f", help="Stop the run first if it is live."),
    as_json: bool = typer.Option(False, "--json", help="Print what was removed as JSON."),
) -> None:
    """Remove a finished run's container and worktree. Its branch stays."""
    from launcher.core.transitions import LIVE_RUN_STATES
    from launcher.errors import InvalidInputError

    app_ = app_of(ctx)
    record = app_.store.get_run(run_id)
    if record.state in LIVE_RUN_STATES:
        if not force:
            raise InvalidInputError(f"run {run_id} is {record.state.value}", hint="stop it first, or pass --force")
        ctx.invoke(stop, ctx=ctx, run_id=run_id, as_json=False)
        record = app_.store.get_run(run_id)
    service = app_.runs
    paths = service.paths(record)
    removed = []
    for container in service.env.sandbox.list({"launcher.run-id": record.id, "launcher.root": str(app_.root)}):
        service.env.sandbox.remove(container.id)
        removed.append(f"container {container.name}")
    if paths.worktree.exists():
        service.env.workspace.remove_tree(paths.worktree)
        removed.append(f"worktree {paths.worktree}")
    repo_path = record.details.get("repo")
    if isinstance(repo_path, str):
        service.env.open_repo(repo_path).prune_worktrees()
    if paths.sandbox.exists():
        service.env.workspace.remove_tree(paths.sandbox)
    app_.store.update_run(record.id, details={"removed": True, "keep_worktree": False})
    if as_json:
        emit_json({"run": record.id, "removed": removed, "branch_kept": record.branch})
    else:
        for item in removed:
            typer.echo(f"removed {item}")
        typer.echo(f"kept branch {record.branch}")


def gc(
    ctx: typer.Context,
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only report what would be done."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Settle runs whose launcher died, and remove containers and folders no live run owns."""
    from launcher.adapters.procinfo import owner_alive
    from launcher.core.gc import GarbageCollector

    app_ = app_of(ctx)
    report = GarbageCollector(app_.runs, owner_alive).collect(dry_run=dry_run)
    if as_json:
        emit_json(report.model_dump(mode="json"))
    else:
        if not report.actions:
            typer.echo("nothing to collect")
        for action in report.actions:
            status = "would" if dry_run else ("done" if action.done else "FAILED")
            typer.echo(
                f"{status:6} {action.kind} {action.target}: {action.reason}"
                + (f" ({action.error})" if action.error else "")
            )
    if report.errors:
        raise typer.Exit(ExitCode.FAILURE)

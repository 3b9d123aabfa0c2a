"""`launcher run`: a task's agent in its own worktree, branch, container and network."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from launcher.cli.app_context import app_of, emit_json

if TYPE_CHECKING:
    from launcher.core.run import RunRequest
    from launcher.models import RunRecord


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    ctx: typer.Context,
    args: list[str] = typer.Argument(
        None, metavar="TASK_ID [-- COMMAND…]", help="The task to run and, after --, the agent command."
    ),
    repo: str = typer.Option(
        None,
        "--repo",
        metavar="PATH|NAME",
        help="With --title or --prompt (and no TASK_ID): create the task in this repository first. With "
        "TASK_ID: this task's repository on this machine (a path, a projects.json or [repos] name, or a "
        "remote URL to clone).",
    ),
    title: str = typer.Option(
        None,
        "--title",
        metavar="TEXT",
        help="Title of the task to create (with --repo; default: the prompt's first line).",
    ),
    agent: str = typer.Option(
        None,
        "--agent",
        metavar="NAME",
        help="The agent profile: image, command, variables, --api-key routes, hosts, setup (`launcher agent "
        "list`; default: [agent] default). Options and the task's own image and command win over it.",
    ),
    prompt: str = typer.Option(
        None,
        "--prompt",
        metavar="TEXT",
        help="What the agent is asked to do (default: the task's description, its .md): the command's "
        "{prompt} argument, and read-only at /launcher/prompt.md ({prompt_file}).",
    ),
    prompt_file: Path = typer.Option(None, "--prompt-file", metavar="FILE", help="As --prompt, from a file (UTF-8)."),
    image: str = typer.Option(
        None, "--image", metavar="IMAGE", help="Agent image (default: the task's, else launcher.toml's)."
    ),
    timeout: float = typer.Option(
        None, "--timeout", metavar="SECONDS", help="Seconds before the agent is killed (state timed-out)."
    ),
    grace: float = typer.Option(
        None,
        "--grace",
        metavar="SECONDS",
        min=0,
        max=3600,
        help="Seconds the agent gets to exit after SIGTERM (stop, timeout, Ctrl-C) before SIGKILL "
        "(default: launcher.toml's [run] grace, 10). 0: SIGKILL at once.",
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
    push: bool = typer.Option(
        None,
        "--push/--no-push",
        help="After harvest the host pushes the run's branch (and kept work) with the host's git credentials, "
        "never the run's; a remote ref someone else moved is refused, never overwritten (default: [publish] push).",
    ),
    remote: str = typer.Option(
        None, "--remote", metavar="NAME|URL", help="Where --push pushes (default: [publish] remote, origin)."
    ),
    pr: bool = typer.Option(
        None,
        "--pr/--no-pr",
        help="Push, then open the task attempt's pull request (a re-run updates it) (default: [publish] pr).",
    ),
    ca_file: str = typer.Option(
        None,
        "--ca-file",
        metavar="FILE",
        help="An extra CA (PEM) the run trusts, in its system bundle and the usual variables (default: [network] "
        "ca_file, which the egress proxy trusts too). For TLS-inspecting corporate proxies and internal mirrors.",
    ),
    devcontainer: bool = typer.Option(
        None,
        "--devcontainer/--no-devcontainer",
        help="Run in the repository's own environment: .devcontainer/devcontainer.json (or .devcontainer.json) "
        'plus launcher\'s layer, built and cached by content (default: [run] image = "devcontainer").',
    ),
    concurrent: bool = typer.Option(
        False,
        "--concurrent",
        help="Run even while another live run (another CI job, a batch worker) holds the task's claim.",
    ),
    port: list[str] = typer.Option(
        None,
        "--port",
        metavar="NAME[=[SERVICE:]PORT]",
        help="Lease a host port on 127.0.0.1 for the run: the agent listens on $PORT_<NAME> (the first also "
        "$PORT; =PORT: that container port; =SERVICE:PORT: a service's). `ps` shows NAME -> URL. Repeatable.",
    ),
    service_names: list[str] = typer.Option(
        None,
        "--service",
        metavar="NAME",
        help="Start [run.services.NAME] of launcher.toml on the run's network before the agent (reachable as "
        "NAME:PORT); services with auto = true start anyway. Repeatable.",
    ),
    label: list[str] = typer.Option(
        None,
        "--label",
        "-l",
        metavar="KEY[=VALUE]",
        help="A label of your own, kept with the run: `ps --filter label=KEY[=VALUE]` selects by it, "
        "`ps --format '{{.Labels}}'` shows it. Repeatable.",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the finished run as JSON (agent output goes to the log only)."
    ),
) -> None:
    """Run a task's agent in its own worktree, branch and container.

    Exit status: 0 when the agent exited 0; 10 failed, 11 timed out, 12 cancelled (also
    when launcher gets SIGTERM or SIGHUP, as for Ctrl-C), 13 lost, 15 unharvested (its work is
    kept but not on its branch: the output says how to recover it with `launcher import`),
    16 exceeded (stopped at its disk budget), 17 claimed (another live run holds the task;
    --concurrent runs anyway), 18 publish failed (the work is on the local branch; `launcher
    push RUN` retries), 19 superseded (a newer claim took the task over while it ran: its work
    is kept on its branch, but it is not the task's result), 20 a service did not become healthy
    (the agent never started).

    launcher exits as soon as the result is recorded; a child process it leaves then removes
    the run's container, network and folders ([run] defer_teardown; `launcher gc` waits for it).

    Examples:

    \b
      launcher run demo-1 -- bash -lc 'make test'
      launcher run demo-1 --keep-worktree --timeout 600
      launcher run --repo ../api --title "Bump deps" -- ./agent.sh
      launcher run --repo . --agent aider --prompt "Fix the failing test" --api-key OPENAI_API_KEY=https://api.openai.com
      launcher run demo-1 --agent claude              # the task's .md is the prompt
      launcher run api-3 --repo ~/src/api            # the task's repository is there on this machine
      launcher run demo-1 --preset pypi --allow git.example.com -- pip install -e .
      launcher run demo-1 --api-key ANTHROPIC_API_KEY=https://api.anthropic.com -- claude -p "…"
      launcher run big-7 --sparse services/api --sparse libs/common -- ./agent.sh
      launcher run demo-1 --label team=payments --label ci-job=1234 -- ./agent.sh
    """
    from launcher.adapters.procinfo import current_owner
    from launcher.core import agents
    from launcher.errors import InvalidInputError

    labels = user_labels(label)
    app_ = app_of(ctx)
    items = list(args or [])
    where: str | None = None
    text = read_prompt(prompt, prompt_file)
    chosen = agents.resolve(app_.config.agent, agent)
    profile = chosen[1] if chosen else None
    if title or (repo and text is not None and not items):
        if not repo:
            raise typer.BadParameter("--title goes with --repo: they create the task to run")
        task_ref = app_.create_task(
            repo,
            title or agents.title_of(text or ""),
            body=text,
            # The task keeps the agent's image and command, as if they were given (as `task create --agent`).
            image=image or (profile.image if profile else None),
            command=items or (list(profile.command) if profile else []),
        ).id
        command: list[str] = []
    else:
        if not items:
            hint = "with --repo alone, name the task whose repository it is" if repo else None
            raise InvalidInputError(
                "name a task to run (TASK_ID), or create one with --repo and --title or --prompt", hint=hint
            )
        task_ref, command = items[0], items[1:]
        if repo:
            # Resolved here, once: a detached run's supervisor gets the path, not the name.
            where = app_.repositories.locate(app_.store.resolve_task(task_ref), repo)
    request = run_request(
        task_ref,
        command,
        network,
        image=image,
        timeout=timeout,
        grace=grace,
        keep_worktree=keep_worktree,
        secrets=secret,
        allow=allow,
        presets=preset,
        api_keys=api_key,
        runtime=runtime,
        pool=use_pool,
        sparse=sparse,
        repo=where,
        push=push,
        remote=remote,
        pr=pr,
        concurrent=concurrent,
        ca_file=ca_file,
        devcontainer=devcontainer,
        agent=chosen[0] if chosen else None,
        profile=profile,
        prompt=text,
        ports=port,
        services=service_names,
        labels=labels,
    )
    if detach:
        from launcher.cli.detach import spawn_supervisor

        record = app_.store.get_run(spawn_supervisor(app_, request))
        if as_json:
            emit_json(run_view(record))
        else:
            typer.echo(record.id)
        return
    from launcher.cli.terminal import terminal_echo

    service = app_.runs
    plan = service.plan(request, dict(os.environ))
    app_.defer_teardowns()
    record = service.create(plan, current_owner())
    if not as_json:
        typer.echo(f"launcher: run {record.id} on branch {record.branch}", err=True)
    echo, echo_end = terminal_echo()
    with cancel_on_signals(plan.grace):
        record = service.execute(plan, record, echo=None if as_json else echo)
    if not as_json:
        with contextlib.suppress(OSError):  # the terminal went away; the log has everything
            echo_end()
    report(record, as_json)


@contextlib.contextmanager
def cancel_on_signals(grace: float) -> Iterator[None]:
    """SIGTERM and SIGHUP (a CI runner cancelling the job, a closed terminal) end the run as Ctrl-C
    does: the agent gets SIGTERM and its grace, the run is harvested, settled and recorded
    cancelled. Signals after the first do not cut that short (they would leave the run half
    settled); they are acknowledged."""
    from launcher.errors import Interrupted

    stopping = False

    def handler(signum: int, _frame: object) -> None:
        nonlocal stopping
        if stopping:
            say(f"already stopping the run (the agent has up to {grace:g} s to exit), then cleaning up")
            return
        stopping = True
        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Interrupted(signal.Signals(signum).name)

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.signal(signum, handler) for signum in caught}
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)


def user_labels(given: list[str] | None) -> dict[str, str]:
    """--label KEY[=VALUE]…, or a usage error (exit 2) before anything is made."""
    from launcher.core.user_labels import LabelError, parse_labels

    try:
        return parse_labels(given or [])
    except LabelError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--label'") from None


def read_prompt(prompt: str | None, prompt_file: Path | None) -> str | None:
    """--prompt, or --prompt-file's text; None: neither (the task's .md is the prompt then)."""
    from launcher.errors import InvalidInputError

    if prompt is not None and prompt_file is not None:
        raise typer.BadParameter("--prompt and --prompt-file: give one of them")
    if prompt_file is None:
        return prompt
    try:
        return prompt_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read --prompt-file {prompt_file}: {exc}") from exc


def run_request(task: str, command: list[str], network: str | None, **options: Any) -> RunRequest:
    from launcher.core.netpolicy import normalise_mode
    from launcher.core.run import RunRequest

    mode = normalise_mode(network) if network is not None else None
    return RunRequest(task=task, command=command, network=mode, **{k: v for k, v in options.items() if v is not None})


def run_view(run: RunRecord) -> Any:
    from launcher.models.views import RunView

    return RunView.of(run).model_dump(mode="json")


def report(record: RunRecord, as_json: bool) -> None:
    """The finished run (as JSON, or a few lines on stderr); exits with its state's code."""
    from launcher.core.run.publish import publish_problem
    from launcher.core.run_view import exit_status

    status = exit_status(record)
    unpublished = publish_problem(record)
    if as_json:
        emit_json(run_view(record))
        raise typer.Exit(status)
    details = record.details
    commits = len(details.harvest.commits) if details.harvest else 0
    code = "" if record.exit_code is None else f", exit {record.exit_code}"
    say(f"run {record.id} {record.state.value}{code}; {commits} commit(s) on {record.branch}")
    superseded = details.superseded
    if superseded is not None:
        holder = f" (held by {superseded.holder})" if superseded.holder else ""
        say(
            f"superseded: claim #{superseded.current}{holder} took task {record.task_id} over from this run's "
            f"claim #{superseded.fence}; this attempt's work is kept on {record.branch} but is not the task's "
            "result, and its task changes were not applied"
        )
    if details.harvest and details.harvest.refs and details.harvest.error is None:
        say(f"kept: {', '.join(sorted(details.harvest.refs))}")
    if details.oom_killed:
        say(f"the agent was killed for running out of memory (limit {details.memory_limit})")
    if details.log_dropped:
        say(
            f"the log keeps at most {details.log_max} bytes ([run] log_max): {details.log_dropped} bytes of "
            f"output were dropped, where it says so (launcher logs {record.id})"
        )
    if details.log_error:
        say(f"the log may be incomplete: {details.log_error}")
    for leased in details.ports or []:
        say(f"port {leased.name} -> {leased.url} (released)")
    egress = details.egress
    if egress is not None and (egress.denied or egress.allowed):
        from launcher.core.netpolicy import describe_egress

        line = describe_egress(egress.allowed or [], egress.denied or [], egress.allowed_hosts, egress.denied_hosts)
        say(f"network: {line} (launcher logs --egress {record.id})")
    for problem in details.errors or []:
        if superseded is None or not problem.startswith("superseded: "):  # said above
            say(problem)
    for refused in details.task_changes.refused if details.task_changes else []:
        say(f"refused task change: {refused}")
    published = details.publish
    if unpublished:
        say(unpublished)
    elif published is not None and published.pushed and published.ref:
        say(f"pushed {published.ref} ({(published.sha or '')[:12]}) to {published.remote}")
    elif published is not None and published.note and superseded is not None:
        pushed = f"; pushed {', '.join(sorted(published.refs))} to {published.remote}" if published.refs else ""
        say(f"{published.note}{pushed}")
    raise typer.Exit(status)


def say(line: str) -> None:
    typer.echo(f"launcher: {line}", err=True)

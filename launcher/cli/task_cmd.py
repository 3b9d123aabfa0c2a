"""`launcher task …`: create, list, show, set-status."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from launcher.cli.app_context import Application, app_of, emit_json, table

if TYPE_CHECKING:
    from pydantic import BaseModel

    from launcher.core.adopt import AdoptionReport
    from launcher.models import TaskRecord
    from launcher.models.views import TaskView

task_app = typer.Typer(help="Create and inspect tasks; change their status as a compare-and-set.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(task_app, name="task")


def task_view(app_: Application, task: TaskRecord) -> TaskView:
    from launcher.models.views import TaskPaths, TaskView

    paths = TaskPaths(json=str(app_.task_files.json_path(task)), md=str(app_.task_files.md_path(task)))
    return TaskView.model_validate({**task.model_dump(), "paths": paths})


def task_json(view: BaseModel) -> Any:
    return view.model_dump(mode="json", by_alias=True)


def print_task(app_: Application, task: TaskRecord) -> None:
    typer.echo(f"id:      {task.id}")
    typer.echo(f"title:   {task.title}")
    typer.echo(f"status:  {task.status.value}")
    typer.echo(f"repo:    {task.repo} ({task.repo_path or '-'})")
    if task.repo_url:
        typer.echo(f"url:     {task.repo_url}")
    typer.echo(f"slug:    {task.slug}")
    if task.command:
        typer.echo(f"command: {' '.join(task.command)}")
    if task.image:
        typer.echo(f"image:   {task.image}")
    typer.echo(f"file:    {app_.task_files.json_path(task)}")


def report_adoption(report: AdoptionReport) -> None:
    """Adoption news goes to stderr, so --json output on stdout stays one document."""
    for task_id in report.adopted:
        typer.echo(f"launcher: adopted task {task_id}", err=True)
    for task_id in report.changed_outside:
        typer.echo(f"launcher: task {task_id} was edited outside launcher; imported as the new truth", err=True)
    for problem in report.invalid:
        typer.echo(f"launcher: cannot adopt {problem.path}: {problem.error}", err=True)


@task_app.command("create")
def create(
    ctx: typer.Context,
    repo: str = typer.Option(
        ..., "--repo", help="Repository: a name from <root>/projects.json, or the path of a git checkout."
    ),
    title: str = typer.Option(
        None, "--title", help="One line saying what the task is (default: the prompt's first line)."
    ),
    slug: str = typer.Option(None, "--slug", help="ID suffix (default: made from the title)."),
    body_file: Path = typer.Option(None, "--body-file", help="Markdown file with the task's description."),
    image: str = typer.Option(None, "--image", help="Agent image for this task's runs."),
    agent: str = typer.Option(
        None,
        "--agent",
        metavar="NAME",
        help="Store this agent profile's image and command on the task (`launcher agent list`); --image and "
        "a command after `--` win over them.",
    ),
    prompt: str = typer.Option(
        None, "--prompt", metavar="TEXT", help="The task's description (its .md), which is its runs' prompt."
    ),
    prompt_file: Path = typer.Option(None, "--prompt-file", metavar="FILE", help="As --prompt, from a file."),
    base_ref: str = typer.Option(
        None, "--base", metavar="REF", help="Ref the task's run branches start from (default: [run].base_ref, HEAD)."
    ),
    queue: bool = typer.Option(False, "--queue", help="Queue the task for `launcher batch`."),
    template: str = typer.Option(None, "--template", help="Start the task .md from tasks/templates/NAME.md."),
    cross_repo: bool = typer.Option(
        False, "--cross-repo", help="case's cross-repo ID x-<N>-<slug>; --repo is the primary repository."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the task as JSON."),
    command: list[str] = typer.Argument(None, metavar="[-- COMMAND…]", help="Agent command, after `--`."),
) -> None:
    """Store a new task (ID allocated by the coordinator) and write its case task files.

    Example:

    \b
      launcher task create --repo ../api --title "Fix login redirect" -- ./agent.sh
      launcher task create --repo authkit-nextjs --title "Issue 53" --queue -- ./agent.sh
      launcher task create --repo . --agent aider --prompt "Fix the failing test" --queue
    """
    from launcher.cli.run_cmd import read_prompt
    from launcher.core import agents
    from launcher.errors import InvalidInputError

    app_ = app_of(ctx)
    body = read_prompt(prompt, prompt_file)
    if body_file is not None:
        if body is not None:
            raise typer.BadParameter("--body-file and --prompt/--prompt-file: give one of them")
        try:
            body = body_file.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"cannot read --body-file {body_file}: {exc}") from exc
    if title is None:
        if body is None:
            raise InvalidInputError("a task needs a --title (or a --prompt whose first line is one)")
        title = agents.title_of(body)
    chosen = agents.resolve(app_.config.agent, agent) if agent else None
    profile = chosen[1] if chosen else None
    task = app_.create_task(
        repo,
        title,
        slug=slug,
        body=body,
        image=image or (profile.image if profile else None),
        command=list(command or []) or (list(profile.command) if profile else []),
        base_ref=base_ref,
        queued=queue,
        template=template,
        cross_repo=cross_repo,
    )
    if as_json:
        emit_json(task_json(task_view(app_, task)))
    else:
        print_task(app_, task)


@task_app.command("list")
def list_(
    ctx: typer.Context,
    status: str = typer.Option(None, "--status", help="Only tasks in this status."),
    as_json: bool = typer.Option(False, "--json", help="Print the tasks as JSON."),
) -> None:
    """List tasks, oldest first."""
    app_ = app_of(ctx).read_only()
    report_adoption(app_.reconcile(full=True))
    tasks = app_.tasks.list_tasks(status)
    if as_json:
        emit_json([task_json(task_view(app_, t)) for t in tasks])
        return
    if not tasks:
        typer.echo("no tasks")
        return
    typer.echo(table([[t.id, t.status.value, t.repo, t.title[:60]] for t in tasks], ["ID", "STATUS", "REPO", "TITLE"]))


@task_app.command("show")
def show(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., help="Task ID, or its short form <repo>-<N>."),
    as_json: bool = typer.Option(False, "--json", help="Print the task and its history as JSON."),
) -> None:
    """Show a task with its status history and runs."""
    app_ = app_of(ctx).read_only()
    report_adoption(app_.reconcile(full=True))
    task = app_.tasks.get(task_id)
    history = app_.tasks.history(task.id)
    runs = app_.store.list_runs(task_id=task.id)
    if as_json:
        from launcher.models.views import TaskDetailView

        detail = {**task_view(app_, task).model_dump(), "history": history, "runs": runs}
        emit_json(task_json(TaskDetailView.model_validate(detail)))
        return
    print_task(app_, task)
    typer.echo("history:")
    for h in history:
        source = h.from_status.value if h.from_status else "-"
        typer.echo(f"  {h.at.isoformat()}  {source} -> {h.to_status.value}  by {h.actor}  {h.reason or ''}".rstrip())
    if runs:
        typer.echo("runs:")
        for r in runs:
            code = "" if r.exit_code is None else f" exit {r.exit_code}"
            typer.echo(f"  {r.id}  {r.state.value}{code}  {r.branch}")


@task_app.command("set-status")
def set_status(
    ctx: typer.Context,
    task_id: str = typer.Argument(..., help="Task ID."),
    status: str = typer.Argument(..., help="New status (case's names: active, implementing, …)."),
    expected: str = typer.Option(
        None, "--from", help="Only if the task is in this status now (compare-and-set); exit 3 otherwise."
    ),
    reason: str = typer.Option(None, "--reason", help="Why; kept in the history and the Progress Log."),
    as_json: bool = typer.Option(False, "--json", help="Print the updated task as JSON."),
) -> None:
    """Change a task's status, legally and atomically. Exit 3 on a conflict, 4 on an illegal move."""
    app_ = app_of(ctx)
    report_adoption(app_.reconcile(full=True))
    task = app_.tasks.set_status(task_id, status, expected=expected, reason=reason)
    if as_json:
        emit_json(task_json(task_view(app_, task)))
    else:
        typer.echo(f"{task.id}: {task.status.value}")

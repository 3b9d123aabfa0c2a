"""`launcher diff|merge|apply|checkout RUN`: a run's result back in a person's checkout."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from launcher.cli.app_context import Application, app_of, emit_json

if TYPE_CHECKING:
    from launcher.core.results import ResultsDeps

_RUN = typer.Argument(..., metavar="RUN", help="Run ID (`launcher ps --all` lists them).")
_JSON = typer.Option(False, "--json", help="Print the result as JSON.")
# ANSI colors for a diff shown on a terminal, applied after the agent's text is neutralised.
_COLORS = (("diff --git", "\x1b[1m"), ("@@", "\x1b[36m"), ("+++", "\x1b[1m"), ("---", "\x1b[1m"))


def register(app: typer.Typer) -> None:
    app.command("diff")(diff)
    app.command("merge")(merge)
    app.command("apply")(apply)
    app.command("checkout")(checkout)


def results_deps(app_: Application) -> ResultsDeps:
    from launcher.adapters.git_results import open_results
    from launcher.core.results import ResultsDeps

    locks = app_.layout.locks_dir
    return ResultsDeps(
        store=app_.store,
        open_git=lambda path: open_results(path, lock_dir=locks),
        checkouts_dir=app_.layout.state_dir / "checkouts",
    )


def diff(
    ctx: typer.Context,
    run_id: str = _RUN,
    stat: bool = typer.Option(False, "--stat", help="Only a diffstat."),
    as_json: bool = _JSON,
) -> None:
    """Show a run's changes: its branch against the base it started from (base..branch).

    Host git on the run's repository, no pager, no external diff drivers or textconv. Piped or
    redirected, the output is git's exact bytes (`launcher diff RUN | git apply` works); on a
    terminal it is colored, and control characters the agent wrote are shown as text.

    \b
      launcher diff demo-1.1 --stat
      launcher diff demo-1.1 > demo-1.1.patch
    """
    from launcher.core import results

    found, text = results.diff(results_deps(app_of(ctx).read_only()), run_id, stat=stat)
    if as_json:
        emit_json(found.model_dump(mode="json"))
        return
    if not text:
        typer.echo(f"launcher: run {found.run_id} has no changes ({found.branch} is at its base)", err=True)
        return
    _write(text)


def _write(text: bytes) -> None:
    if sys.stdout.isatty():
        from launcher.cli.terminal import neutralise

        shown = "".join(_colored(line) for line in neutralise(text.decode("utf-8", "replace")).splitlines(True))
        sys.stdout.write(shown)
    elif hasattr(sys.stdout, "buffer"):
        sys.stdout.flush()
        sys.stdout.buffer.write(text)
    else:  # a captured stream (tests) has no bytes layer
        sys.stdout.write(text.decode("utf-8", "replace"))
    sys.stdout.flush()


def _colored(line: str) -> str:
    for prefix, color in _COLORS:
        if line.startswith(prefix):
            return f"{color}{line.rstrip(chr(10))}\x1b[0m\n"
    if line.startswith(("+", "-")) and not line.startswith(("+++", "---")):
        color = "\x1b[32m" if line[0] == "+" else "\x1b[31m"
        return f"{color}{line.rstrip(chr(10))}\x1b[0m\n"
    return line


def merge(
    ctx: typer.Context,
    run_id: str = _RUN,
    into: str = typer.Option(
        None, "--into", metavar="BRANCH", help="Branch to merge into (default: the main checkout's current branch)."
    ),
    no_ff: bool = typer.Option(False, "--no-ff", help="Always make a merge commit."),
    squash: bool = typer.Option(False, "--squash", help="One commit on BRANCH with all of the run's changes."),
    as_json: bool = _JSON,
) -> None:
    """Merge a run's branch into BRANCH with host git, in the repository's main checkout.

    Refused, with nothing changed: a run still live; a main checkout with uncommitted changes
    to tracked files or in the middle of a merge or rebase; BRANCH checked out in another
    worktree. A conflict aborts the merge (nothing half-merged) and names the files. A BRANCH
    checked out nowhere can only be fast-forwarded (its ref moves, compare-and-set). No hooks
    run: they could run the run's code on the host.

    \b
      launcher merge demo-1.1                   # into the branch checked out now
      launcher merge demo-1.1 --into release --no-ff
    """
    from launcher.core import results
    from launcher.core.ports.results import MergeMode

    if no_ff and squash:
        raise typer.BadParameter("--no-ff and --squash exclude each other")
    mode: MergeMode = "squash" if squash else ("no-ff" if no_ff else "ff")
    done = results.merge(results_deps(app_of(ctx)), run_id, into=into, mode=mode)
    if as_json:
        emit_json(done.model_dump(mode="json"))
    elif done.how == "up-to-date":
        typer.echo(f"{done.into} already has everything of {done.branch} (run {done.run_id}); nothing to merge")
    else:
        where = f" in {done.checkout}" if done.checkout else " (not checked out: its ref moved)"
        typer.echo(
            f"merged {done.branch} (run {done.run_id}) into {done.into}{where}: {done.how}, now at {done.head[:12]}"
        )


def apply(ctx: typer.Context, run_id: str = _RUN, as_json: bool = _JSON) -> None:
    """Apply a run's changes (base..branch) to the main checkout as staged, uncommitted changes.

    All or nothing: refused when a file the run changes has uncommitted changes, when the
    changes would conflict with what the checkout's HEAD holds now, or when they would
    overwrite an untracked file.
    """
    from launcher.cli.terminal import neutralise
    from launcher.core import results

    done = results.apply(results_deps(app_of(ctx)), run_id)
    if as_json:
        emit_json(done.model_dump(mode="json"))
        return
    if not done.files:
        typer.echo(f"run {done.run_id} has no changes ({done.branch} is at its base); nothing applied")
        return
    typer.echo(f"applied run {done.run_id} ({done.branch}) to {done.checkout}: {len(done.files)} file(s), staged")
    for path in done.files:
        typer.echo(f"  {neutralise(path)}")


def checkout(
    ctx: typer.Context,
    run_id: str = _RUN,
    path: str = typer.Argument(
        None, metavar="PATH", help="Where (a new or empty folder; default: <root>/.launcher/checkouts/RUN)."
    ),
    as_json: bool = _JSON,
) -> None:
    """Check a run's result out for a person to look at: a new worktree of its repository,
    detached at the tip of the run's branch, made by host git from the repository's own objects
    (nothing the agent's worktree held). Prints its path; `git worktree remove PATH` removes it.
    """
    from pathlib import Path

    from launcher.core import results

    done = results.checkout(results_deps(app_of(ctx)), run_id, Path(path) if path else None)
    if as_json:
        emit_json(done.model_dump(mode="json"))
        return
    typer.echo(done.path)
    typer.echo(
        f"launcher: {done.branch} (run {done.run_id}) checked out at {done.tip[:12]}, detached; "
        f"`git worktree remove {done.path}` when done",
        err=True,
    )

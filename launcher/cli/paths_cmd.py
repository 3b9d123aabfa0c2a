"""`launcher paths …`: find hard-coded home paths, fix them, render `$CASE_ROOT` templates."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from launcher.cli.app_context import app_of, dump, emit_json

paths_app = typer.Typer(
    help="Find hard-coded home paths in the harness, rewrite them to $CASE_ROOT, render templates.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(paths_app, name="paths")


def _harness(ctx: typer.Context, directory: Path | None) -> Path:
    return directory if directory is not None else app_of(ctx).root


@paths_app.command("check")
def check(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Argument(metavar="DIR", help="Harness root to scan (default: the case root).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the hits as JSON.")] = False,
) -> None:
    """List hard-coded /Users/<name>/… and /home/<name>/… paths with a $CASE_ROOT suggestion.

    Scans Markdown, shell, TS/JS and JSON files; skips .git, node_modules, .launcher, binary
    files and files over 2 MiB. Exit 1 when anything is found, 0 otherwise.
    """
    from launcher.core.pathscan import check as scan

    result = scan(_harness(ctx, directory))
    if as_json:
        emit_json(dump(result))
    else:
        for hit in result.hits:
            typer.echo(f"{hit.file}:{hit.line}: {hit.found} -> {hit.suggestion}")
        if result.count:
            files = len({hit.file for hit in result.hits})
            detected = result.hard_coded_root or "not detected"
            typer.echo(
                f"{result.count} hard-coded home path(s) in {files} file(s) under {result.root}"
                f" (hard-coded harness root: {detected})"
            )
        else:
            typer.echo(f"no hard-coded home paths under {result.root}")
    if result.count:
        raise typer.Exit(1)


@paths_app.command("render")
def render(
    ctx: typer.Context,
    src: Annotated[Path, typer.Argument(metavar="SRC", help="Template file, or folder of templates to mirror.")],
    dest: Annotated[Path, typer.Argument(metavar="DEST", help="Output file, or output folder (not inside SRC).")],
    root: Annotated[str | None, typer.Option("--root", help="Value for $CASE_ROOT (default: the case root).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was written as JSON.")] = False,
) -> None:
    """Replace $CASE_ROOT and ${CASE_ROOT} with a root; each file is written atomically.

    In folder mode Markdown, shell, TS/JS and JSON text files are rendered and everything
    else is copied as-is. $CASE_ROOT_X, \\$CASE_ROOT and $$CASE_ROOT are left alone.
    """
    from launcher.adapters.safe_io import atomic_write
    from launcher.core.pathscan import render as render_tree

    value = root if root is not None else str(app_of(ctx).root)
    result = render_tree(src, dest, value, atomic_write)
    if as_json:
        emit_json(dump(result))
        return
    for item in result.files:
        detail = f" ({item.replacements} replaced)" if item.action == "rendered" else ""
        typer.echo(f"{item.action:<8}  {item.target}{detail}")
    for rel in result.skipped:
        typer.echo(f"skipped   {rel} (not a regular file)")
    typer.echo(
        f"{result.rendered} rendered, {result.copied} copied, {result.replacements} replacement(s)"
        f" with $CASE_ROOT={result.root}"
    )


@paths_app.command("fix")
def fix(
    ctx: typer.Context,
    directory: Annotated[
        Path | None, typer.Argument(metavar="DIR", help="Harness root to fix (default: the case root).")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the diff; write nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the changes (and diffs) as JSON.")] = False,
) -> None:
    """Rewrite the hard-coded harness root to $CASE_ROOT; print a unified diff first.

    Shell scripts get ${CASE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)} (as many .. as the
    script is deep), so they also work outside launcher; Markdown, TS/JS and JSON get
    $CASE_ROOT. Only matching lines change; a second run changes nothing.
    """
    from launcher.adapters.safe_io import atomic_write
    from launcher.core.pathscan import apply_fix, plan_fix

    plan = plan_fix(_harness(ctx, directory), dry_run=dry_run)
    result = plan.result
    if not as_json:
        for item in result.files:
            typer.echo(item.diff, nl=False)
    apply_fix(plan, atomic_write)
    if as_json:
        emit_json(dump(result))
        return
    for hit in result.unfixed:
        typer.echo(f"left: {hit.file}:{hit.line}: {hit.found} -> {hit.suggestion}")
    verb = "would change" if dry_run else "changed"
    if result.files:
        typer.echo(f"{verb} {result.replacements} path(s) in {result.changed_files} file(s) under {result.root}")
    else:
        typer.echo(f"nothing to fix under {result.root}")

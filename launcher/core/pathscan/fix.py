"""Planning and applying `paths fix`: the hard-coded root replaced at each hit under it.

Planning only reads; ``apply_fix`` writes through the ``Writer`` it is given.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel

from launcher.core.pathscan.files import SourceFile, Writer, resolve_dir
from launcher.core.pathscan.scan import VARIABLE, Hit, PathHit, analyse, public_hit
from launcher.core.pathscan.shell import shell_contexts, shell_root_expression
from launcher.errors import InvalidInputError


class FileFix(BaseModel):
    file: str
    replacements: int
    lines: list[int]
    diff: str


class FixResult(BaseModel):
    root: str
    hard_coded_root: str | None
    dry_run: bool
    files: list[FileFix]
    changed_files: int
    replacements: int
    unfixed: list[PathHit]


def _shell_replacement(context: str, depth: int) -> str | None:
    expression = shell_root_expression(depth)
    forms = {
        "unquoted": f'"{expression}"',
        "double": expression,
        "heredoc": expression,
        "single": f"'\"{expression}\"'",
        "comment": VARIABLE,
    }
    return forms.get(context)  # literal here-documents and shebangs: left for a human


@dataclass
class FixPlan:
    result: FixResult
    writes: list[tuple[SourceFile, str]] = field(default_factory=list)


def _unified_diff(rel: str, old: str, new: str) -> str:
    lines = difflib.unified_diff(old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{rel}", f"b/{rel}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def plan_fix(directory: Path, *, dry_run: bool = False) -> FixPlan:
    """What `paths fix` would change: the hard-coded root replaced at each hit under it."""
    base = resolve_dir(directory)
    root, hits = analyse(base)
    by_file: dict[str, list[Hit]] = {}
    for hit in hits:
        by_file.setdefault(hit.source.rel, []).append(hit)
    result = FixResult(
        root=str(base),
        hard_coded_root=root,
        dry_run=dry_run,
        files=[],
        changed_files=0,
        replacements=0,
        unfixed=[],
    )
    plan = FixPlan(result)
    for rel, file_hits in by_file.items():
        source = file_hits[0].source
        shell = source.kind == "shell"
        contexts = shell_contexts(source.text, {h.offset for h in file_hits}) if shell else {}
        text, done = source.text, []
        for hit in sorted(file_hits, key=lambda h: h.offset, reverse=True):
            new = None
            if hit.root is not None:
                new = _shell_replacement(contexts.get(hit.offset, ""), rel.count("/")) if shell else VARIABLE
            if new is None:
                result.unfixed.append(public_hit(hit))
                continue
            text = text[: hit.offset] + new + text[hit.offset + len(hit.root or "") :]
            done.append(hit.line)
        if done:
            diff = _unified_diff(rel, source.text, text)
            result.files.append(FileFix(file=rel, replacements=len(done), lines=sorted(set(done)), diff=diff))
            plan.writes.append((source, text))
    result.unfixed.sort(key=lambda h: (h.file, h.line, h.column))
    result.changed_files = len(result.files)
    result.replacements = sum(f.replacements for f in result.files)
    return plan


def apply_fix(plan: FixPlan, writer: Writer) -> None:
    """Write the planned files, refusing any that changed since they were read."""
    if plan.result.dry_run:
        return
    for source, text in plan.writes:
        try:
            current = source.path.read_bytes()
        except OSError as exc:
            raise InvalidInputError(f"cannot re-read {source.path}: {exc.strerror or exc}") from exc
        if current != source.text.encode("utf-8"):
            raise InvalidInputError(f"{source.path} changed while being fixed", hint="run `paths fix` again")
        writer(source.path, text.encode("utf-8"), mode=source.mode)

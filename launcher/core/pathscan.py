"""Hard-coded home paths in a harness tree: find them, fix them, and render `$CASE_ROOT` templates.

A hit is an absolute `/Users/<name>/…` or `/home/<name>/…` path in a Markdown, shell, TS/JS or
JSON file. The harness root it was hard-coded as is found from the tree itself: for each hit,
the shortest prefix whose remainder exists inside the scanned folder (`/Users/alice/dev/case`
for `/Users/alice/dev/case/scripts/x.sh` when `scripts/x.sh` exists); the prefix most hits
agree on is *the* hard-coded root. Hits under it, or whose own remainder exists, map to
`$CASE_ROOT/…`; the rest live outside the harness and are only reported.

No I/O beyond reading the tree: writing goes through a ``Writer`` the caller passes in.
"""

from __future__ import annotations

import difflib
import os
import re
import stat
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from launcher.errors import InvalidInputError, NotFoundError

MAX_BYTES = 2 * 1024 * 1024
SKIP_DIRS = frozenset({".git", "node_modules", ".launcher"})
OUTSIDE = "(outside the harness: make it configurable)"
VARIABLE = "$CASE_ROOT"

Kind = Literal["markdown", "shell", "script", "json"]
_EXT_KINDS: dict[str, Kind] = {
    ".md": "markdown",
    ".mdx": "markdown",
    ".sh": "shell",
    ".bash": "shell",
    ".ts": "script",
    ".tsx": "script",
    ".js": "script",
    ".mjs": "script",
    ".cjs": "script",
    ".jsx": "script",
    ".json": "json",
}

# `/Users/<name>` or `/home/<name>`, then path segments up to a character no path here uses.
_HOME_PATH = re.compile(
    r"(?<![\w.~$})])/(?:Users|home)/[A-Za-z0-9_][A-Za-z0-9._-]*"
    r"(?:/[^/\s\"'`<>()\[\]{}|;,:*?!#&\\$^]*)*"
)
# `$CASE_ROOT` / `${CASE_ROOT}`, not `$CASE_ROOT_X`, not `\$CASE_ROOT` nor `$$CASE_ROOT`.
_VARIABLE = re.compile(r"(?<![\\$])\$(?:\{CASE_ROOT\}|CASE_ROOT(?![A-Za-z0-9_]))")


class Writer(Protocol):
    """Replaces ``path`` with ``data`` (atomically, in production)."""

    def __call__(self, path: Path, data: bytes, *, mode: int = 0o644) -> None: ...


class PathHit(BaseModel):
    file: str
    line: int
    column: int
    found: str
    suggestion: str


class CheckResult(BaseModel):
    root: str
    hard_coded_root: str | None
    hits: list[PathHit]
    count: int


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


class RenderedFile(BaseModel):
    file: str
    target: str
    action: Literal["rendered", "copied"]
    replacements: int


class RenderResult(BaseModel):
    src: str
    dest: str
    root: str
    files: list[RenderedFile]
    rendered: int
    copied: int
    replacements: int
    skipped: list[str]


# --- reading the tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFile:
    path: Path
    rel: str
    kind: Kind
    text: str
    mode: int


def _is_shell_shebang(first_line: str) -> bool:
    words = first_line[2:].split()
    prog = words[0].rsplit("/", 1)[-1] if words else ""
    if prog == "env":
        args = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        prog = args[0].rsplit("/", 1)[-1] if args else ""
    return prog in {"sh", "bash"}


def file_kind(path: Path) -> Kind | None:
    """The kind of a regular, non-symlink file, by extension or by a sh/bash shebang."""
    kind = _EXT_KINDS.get(path.suffix.lower())
    if kind is not None:
        return kind
    try:
        with path.open("rb") as handle:
            head = handle.read(256)
    except OSError:
        return None
    if head.startswith(b"#!") and _is_shell_shebang(head.split(b"\n", 1)[0].decode("utf-8", "replace")):
        return "shell"
    return None


def _regular(path: Path) -> os.stat_result | None:
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def _decode(data: bytes) -> str | None:
    if b"\0" in data:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def walk(directory: Path) -> Iterator[tuple[Path, str]]:
    """Every entry below ``directory`` except skipped folders, sorted; symlinked folders not entered."""
    for current, dirs, files in os.walk(directory):
        base = Path(current)
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not (base / d).is_symlink())
        for name in sorted(files):
            path = base / name
            yield path, path.relative_to(directory).as_posix()


def harness_files(directory: Path) -> Iterator[SourceFile]:
    """The text files of the four kinds, at most 2 MiB, not binary, not symlinks."""
    for path, rel in walk(directory):
        info = _regular(path)
        if info is None or info.st_size > MAX_BYTES:
            continue
        kind = file_kind(path)
        if kind is None:
            continue
        try:
            text = _decode(path.read_bytes())
        except OSError:
            continue
        if text is not None:
            yield SourceFile(path, rel, kind, text, stat.S_IMODE(info.st_mode))


def _directory(directory: Path) -> Path:
    if not directory.exists():
        raise NotFoundError(f"{directory} does not exist")
    if not directory.is_dir():
        raise InvalidInputError(f"{directory} is not a directory")
    return directory.resolve()


# --- finding hits and the hard-coded root -----------------------------------------------------


@dataclass(frozen=True)
class _Hit:
    source: SourceFile
    offset: int
    line: int
    column: int
    found: str
    root: str | None = None


def _find_hits(source: SourceFile) -> list[_Hit]:
    starts = [0] + [m.end() for m in re.finditer("\n", source.text)]
    hits = []
    for match in _HOME_PATH.finditer(source.text):
        found = match.group().rstrip(".")
        line = bisect_right(starts, match.start())
        hits.append(_Hit(source, match.start(), line, match.start() - starts[line - 1] + 1, found))
    return hits


def _own_root(found: str, directory: Path) -> str | None:
    """The shortest prefix of ``found`` (at least `/Users/<name>`) whose remainder exists in ``directory``."""
    parts = found.rstrip("/").split("/")
    for k in range(3, len(parts)):
        rest = parts[k:]
        if "" in parts[1:k] or any(p in ("", ".", "..") for p in rest):
            continue
        if os.path.lexists(directory.joinpath(*rest)):
            return "/".join(parts[:k])
    return None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root + "/")


def _analyse(directory: Path) -> tuple[str | None, list[_Hit]]:
    """The hard-coded root, and every hit with the root it belongs to (None: outside)."""
    raw = [hit for source in harness_files(directory) for hit in _find_hits(source)]
    own = [_own_root(hit.found, directory) for hit in raw]
    votes = Counter(r for r in own if r is not None)
    root = max(votes.items(), key=lambda kv: (kv[1], len(kv[0]), kv[0]))[0] if votes else None
    hits = []
    for hit, mine in zip(raw, own, strict=True):
        chosen = root if root is not None and _under(hit.found, root) else mine
        hits.append(_Hit(hit.source, hit.offset, hit.line, hit.column, hit.found, chosen))
    return root, hits


def _public(hit: _Hit) -> PathHit:
    suggestion = OUTSIDE if hit.root is None else VARIABLE + hit.found[len(hit.root) :]
    return PathHit(file=hit.source.rel, line=hit.line, column=hit.column, found=hit.found, suggestion=suggestion)


def check(directory: Path) -> CheckResult:
    """Every hard-coded home path under ``directory``, with a `$CASE_ROOT` suggestion."""
    base = _directory(directory)
    root, hits = _analyse(base)
    public = [_public(h) for h in hits]
    return CheckResult(root=str(base), hard_coded_root=root, hits=public, count=len(public))


# --- fixing -----------------------------------------------------------------------------------

_WORD_START = frozenset(" \t\n;&|()")


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _quoting(stack: list[str]) -> str:
    for frame in reversed(stack):
        if frame != "brace":
            return {"dq": "double", "sq": "single"}.get(frame, "unquoted")
    return "unquoted"  # pragma: no cover - the stack always holds "top"


def _heredoc_op(text: str, i: int, pending: list[tuple[str, bool, bool]]) -> int:
    """Parse the delimiter after `<<` at ``i``; queue the body for the end of the line."""
    strip = text.startswith("-", i)
    i += strip
    while i < len(text) and text[i] in " \t":
        i += 1
    start = i
    while i < len(text) and text[i] not in " \t\r\n;&|<>()":
        i += 1
    word = text[start:i]
    delimiter = word.translate(str.maketrans("", "", "'\"\\"))
    if delimiter and (delimiter[0].isalpha() or delimiter[0] == "_"):
        pending.append((delimiter, strip, delimiter == word))
    return i


def _heredoc_bodies(
    text: str, i: int, pending: list[tuple[str, bool, bool]], mark: Callable[[int, int, str], None]
) -> int:
    for delimiter, strip, expands in pending:
        j, body = i, []
        while j < len(text):
            end = _line_end(text, j)
            line = text[j:end].rstrip("\r")
            if (line.lstrip("\t") if strip else line) == delimiter:
                break
            body.append((j, end))
            j = end + 1
        else:
            continue  # no terminator: not a here-document after all
        for start, end in body:
            mark(start, end, "heredoc" if expands else "literal")
        i = _line_end(text, j) + 1
    return i


def shell_contexts(text: str, offsets: set[int]) -> dict[int, str]:
    """The quoting context at each offset of a shell script, from a small lexer.

    Contexts: unquoted, double, single, comment, heredoc (expanding), literal (quoted
    here-document), shebang. It knows quotes, `$( )`, `${ }`, backticks, arithmetic,
    comments and here-documents; enough for where a path sits, not a full parser.
    """
    out: dict[int, str] = {}
    stack: list[str] = ["top"]
    pending: list[tuple[str, bool, bool]] = []

    def mark(start: int, end: int, context: str) -> None:
        out.update({o: context for o in offsets if start <= o < end})

    i, n = 0, len(text)
    if text.startswith("#!"):
        i = _line_end(text, 0)
        mark(0, i, "shebang")
    while i < n:
        frame, c, two = stack[-1], text[i], text[i : i + 2]
        if i in offsets:
            out[i] = _quoting(stack)
        step = 1
        if frame == "sq":
            if c == "'":
                stack.pop()
        elif c == "\\":
            step = 2
        elif frame == "dq":
            if c == '"':
                stack.pop()
            elif two in ("$(", "${"):
                stack.append("sub" if two == "$(" else "brace")
                step = 2
            elif c == "`":
                stack.append("bt")
        elif text.startswith("$((", i) or (two == "((" and (i == 0 or text[i - 1] in _WORD_START)):
            stack.append("arith")
            step = 3 if c == "$" else 2
        elif frame == "arith" and two == "))":
            stack.pop()
            step = 2
        elif c in "'\"":
            stack.append("sq" if c == "'" else "dq")
        elif two in ("$(", "${"):
            stack.append("sub" if two == "$(" else "brace")
            step = 2
        elif c == "`":
            if frame == "bt":
                stack.pop()
            else:
                stack.append("bt")
        elif c == "(" and frame != "brace":
            stack.append("paren")
        elif (c == ")" and frame in ("sub", "paren")) or (c == "}" and frame == "brace"):
            stack.pop()
        elif c == "#" and frame != "brace" and (i == 0 or text[i - 1] in _WORD_START):
            end = _line_end(text, i)
            mark(i, end, "comment")
            step = end - i
        elif two == "<<" and not text.startswith("<<<", i) and "arith" not in stack and frame != "brace":
            step = _heredoc_op(text, i + 2, pending) - i
        elif c == "\n" and pending:
            step = _heredoc_bodies(text, i + 1, pending, mark) - i
            pending.clear()
        i += max(step, 1)
    return out


def shell_root_expression(depth: int) -> str:
    """`$CASE_ROOT`, else the folder ``depth`` levels above the running script."""
    return '${CASE_ROOT:-$(cd "$(dirname "$0")' + "/.." * depth + '" && pwd)}'


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
    base = _directory(directory)
    root, hits = _analyse(base)
    by_file: dict[str, list[_Hit]] = {}
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
                result.unfixed.append(_public(hit))
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


# --- rendering --------------------------------------------------------------------------------


def render_text(text: str, root: str) -> tuple[str, int]:
    """``text`` with `$CASE_ROOT` and `${CASE_ROOT}` replaced by ``root``, and how many were."""
    return _VARIABLE.subn(lambda _match: root, text)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _check_parents(dest: Path, target: Path) -> None:
    """No existing component between ``dest`` and ``target`` may be a symlink or a non-folder."""
    current = dest
    for part in target.relative_to(dest).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise InvalidInputError(f"{current} is a symbolic link; refusing to write through it")
        if current.exists() and not current.is_dir():
            raise InvalidInputError(f"{current} is in the way: not a directory")
    if target.is_dir() and not target.is_symlink():
        raise InvalidInputError(f"{target} is a directory")


@dataclass(frozen=True)
class _Job:
    source: Path
    rel: str
    target: Path
    mode: int
    data: bytes
    template: bool


def _job(path: Path, rel: str, target: Path, *, force_template: bool) -> _Job | None:
    info = _regular(path)
    if info is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    template = force_template or (info.st_size <= MAX_BYTES and file_kind(path) is not None)
    template = template and _decode(data) is not None
    return _Job(path, rel, target, stat.S_IMODE(info.st_mode), data, template)


def render(src: Path, dest: Path, root: str, writer: Writer) -> RenderResult:
    """Render one template file, or mirror a folder of them, into ``dest``."""
    if not src.exists():
        raise NotFoundError(f"{src} does not exist")
    source = src.resolve()
    target_base = dest.resolve()
    jobs: list[_Job] = []
    skipped: list[str] = []
    if source.is_dir():
        if _inside(target_base, source):
            raise InvalidInputError(f"DEST {dest} is inside SRC {src}; choose a folder outside it")
        if target_base.exists() and not target_base.is_dir():
            raise InvalidInputError(f"DEST {dest} exists and is not a directory")
        for path, rel in walk(source):
            job = _job(path, rel, target_base / rel, force_template=False)
            if job is None:
                skipped.append(rel)
            else:
                jobs.append(job)
    else:
        target = target_base / source.name if target_base.is_dir() else target_base
        target_base = target.parent
        job = _job(source, source.name, target, force_template=True)
        if job is None or not job.template:
            raise InvalidInputError(f"{src} is not a UTF-8 text file")
        if target == source:
            raise InvalidInputError(f"DEST {dest} is SRC itself")
        jobs.append(job)
    for job in jobs:
        _check_parents(target_base, job.target)
        if source.is_dir() and _inside(job.target, source):
            raise InvalidInputError(f"{job.target} would overwrite a file inside SRC {src}")
    files = [_write(job, target_base, root, writer) for job in jobs]
    return RenderResult(
        src=str(source),
        dest=str(dest.resolve()),
        root=root,
        files=files,
        rendered=sum(f.action == "rendered" for f in files),
        copied=sum(f.action == "copied" for f in files),
        replacements=sum(f.replacements for f in files),
        skipped=skipped,
    )


def _write(job: _Job, base: Path, root: str, writer: Writer) -> RenderedFile:
    base.mkdir(parents=True, exist_ok=True)
    current = base
    for part in job.target.relative_to(base).parts[:-1]:
        current = current / part
        if current.is_symlink():
            raise InvalidInputError(f"{current} is a symbolic link; refusing to write through it")
        current.mkdir(exist_ok=True)
    data, count = job.data, 0
    if job.template:
        text, count = render_text(job.data.decode("utf-8"), root)
        data = text.encode("utf-8")
    writer(job.target, data, mode=job.mode)
    action: Literal["rendered", "copied"] = "rendered" if job.template else "copied"
    return RenderedFile(file=job.rel, target=str(job.target), action=action, replacements=count)

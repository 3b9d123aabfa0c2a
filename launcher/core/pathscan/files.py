"""The harness tree: which files are scanned and how they are read, and the writer that changes them.

Reading is the only I/O here; writing goes through a ``Writer`` the caller passes in.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from launcher.errors import InvalidInputError, NotFoundError

MAX_BYTES = 2 * 1024 * 1024
SKIP_DIRS = frozenset({".git", "node_modules", ".launcher"})

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


class Writer(Protocol):
    """Replaces ``path`` with ``data`` (atomically, in production)."""

    def __call__(self, path: Path, data: bytes, *, mode: int = 0o644) -> None: ...


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


def regular_stat(path: Path) -> os.stat_result | None:
    """The ``lstat`` of a regular file; None for anything else (symlinks included) or on error."""
    try:
        info = path.lstat()
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def decode_text(data: bytes) -> str | None:
    """``data`` as UTF-8 text; None when it is binary (has a NUL) or not UTF-8."""
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
        info = regular_stat(path)
        if info is None or info.st_size > MAX_BYTES:
            continue
        kind = file_kind(path)
        if kind is None:
            continue
        try:
            text = decode_text(path.read_bytes())
        except OSError:
            continue
        if text is not None:
            yield SourceFile(path, rel, kind, text, stat.S_IMODE(info.st_mode))


def resolve_dir(directory: Path) -> Path:
    """``directory`` resolved, or the error `paths check`/`paths fix` report when it is missing or a file."""
    if not directory.exists():
        raise NotFoundError(f"{directory} does not exist")
    if not directory.is_dir():
        raise InvalidInputError(f"{directory} is not a directory")
    return directory.resolve()

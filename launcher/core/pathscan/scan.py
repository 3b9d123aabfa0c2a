"""Finding hard-coded home paths and the harness root they were hard-coded as (`paths check`).

The rule for the root is in the package docstring.
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from launcher.core.pathscan.files import SourceFile, harness_files, resolve_dir

OUTSIDE = "(outside the harness: make it configurable)"
VARIABLE = "$CASE_ROOT"

# `/Users/<name>` or `/home/<name>`, then path segments up to a character no path here uses.
_HOME_PATH = re.compile(
    r"(?<![\w.~$})])/(?:Users|home)/[A-Za-z0-9_][A-Za-z0-9._-]*"
    r"(?:/[^/\s\"'`<>()\[\]{}|;,:*?!#&\\$^]*)*"
)


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


@dataclass(frozen=True)
class Hit:
    """One hard-coded path in a file; ``root`` is the harness root it maps to (None: outside)."""

    source: SourceFile
    offset: int
    line: int
    column: int
    found: str
    root: str | None = None


def _find_hits(source: SourceFile) -> list[Hit]:
    starts = [0] + [m.end() for m in re.finditer("\n", source.text)]
    hits = []
    for match in _HOME_PATH.finditer(source.text):
        found = match.group().rstrip(".")
        line = bisect_right(starts, match.start())
        hits.append(Hit(source, match.start(), line, match.start() - starts[line - 1] + 1, found))
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


def analyse(directory: Path) -> tuple[str | None, list[Hit]]:
    """The hard-coded root, and every hit with the root it belongs to (None: outside)."""
    raw = [hit for source in harness_files(directory) for hit in _find_hits(source)]
    own = [_own_root(hit.found, directory) for hit in raw]
    votes = Counter(r for r in own if r is not None)
    root = max(votes.items(), key=lambda kv: (kv[1], len(kv[0]), kv[0]))[0] if votes else None
    hits = []
    for hit, mine in zip(raw, own, strict=True):
        chosen = root if root is not None and _under(hit.found, root) else mine
        hits.append(Hit(hit.source, hit.offset, hit.line, hit.column, hit.found, chosen))
    return root, hits


def public_hit(hit: Hit) -> PathHit:
    """The reported form of ``hit``, with its `$CASE_ROOT` suggestion."""
    suggestion = OUTSIDE if hit.root is None else VARIABLE + hit.found[len(hit.root) :]
    return PathHit(file=hit.source.rel, line=hit.line, column=hit.column, found=hit.found, suggestion=suggestion)


def check(directory: Path) -> CheckResult:
    """Every hard-coded home path under ``directory``, with a `$CASE_ROOT` suggestion."""
    base = resolve_dir(directory)
    root, hits = analyse(base)
    public = [public_hit(h) for h in hits]
    return CheckResult(root=str(base), hard_coded_root=root, hits=public, count=len(public))

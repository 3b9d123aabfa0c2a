"""Rendering `$CASE_ROOT` templates: one file, or a folder mirrored into another (`paths render`).

Reads the source tree; every file is written through the ``Writer`` the caller passes in.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from launcher.core.pathscan.files import MAX_BYTES, Writer, decode_text, file_kind, regular_stat, walk
from launcher.errors import InvalidInputError, NotFoundError

# `$CASE_ROOT` / `${CASE_ROOT}`, not `$CASE_ROOT_X`, not `\$CASE_ROOT` nor `$$CASE_ROOT`.
_VARIABLE = re.compile(r"(?<![\\$])\$(?:\{CASE_ROOT\}|CASE_ROOT(?![A-Za-z0-9_]))")


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
    info = regular_stat(path)
    if info is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    template = force_template or (info.st_size <= MAX_BYTES and file_kind(path) is not None)
    template = template and decode_text(data) is not None
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

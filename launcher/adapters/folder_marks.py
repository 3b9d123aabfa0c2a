"""Marks of the folders launcher made, in a folder of the state dir that only the host writes.

One small JSON file per folder, named by a hash of the folder's path, holding the path and the
folder's identity once it exists: device, inode and, where the file system keeps one, the
inode's generation (FS_IOC_GETVERSION; ext4, xfs, btrfs), which changes when a freed inode
number is given to a new folder. A mark is written before the folder is made (path only) and
completed right after, so a launcher killed in between leaves a mark that still lets gc remove
the folder, but only if it is empty. The workspace forgets a folder's mark once it removed the
folder (MarkedWorkspace); gc forgets those whose folder went another way.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import stat
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from launcher.adapters.safe_io import atomic_write
from launcher.adapters.workspace import LocalWorkspace

MARK_MAX = 4096
FS_IOC_GETVERSION = 0x80087601  # _IOR('v', 1, long)


class FolderMarks:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, path: Path) -> Path:
        return self.folder / f"{hashlib.sha256(os.fsencode(_absolute(path))).hexdigest()[:40]}.json"

    @contextmanager
    def making(self, path: Path) -> Iterator[None]:
        if _lstat(path) is not None:
            yield  # not launcher's to mark: the step meant to make it will find it there
            return
        self._write(path, None)
        try:
            yield
        finally:
            made = _lstat(path)
            if made is not None and stat.S_ISDIR(made.st_mode):
                self._write(path, made)
            else:
                self.forget(path)

    def marked(self) -> list[Path]:
        try:
            files = sorted(self.folder.glob("*.json"))
        except OSError:
            return []
        found = []
        for file in files:
            mark = _read(file)
            if mark is not None:
                found.append(Path(mark.path))
        return sorted(found)

    def is_made(self, path: Path, *, now_at: Path | None = None) -> bool:
        mark = _read(self._file(path))
        if mark is None or mark.path != _absolute(path):
            return False
        where = now_at or path
        found = _lstat(where)
        if found is None or not stat.S_ISDIR(found.st_mode):
            return False  # gone, or a symlink (never followed), or not a folder
        if mark.ino is None:
            # Launcher stopped between making the folder and completing its mark: an empty
            # folder is what it made; anything else may be somebody's.
            if now_at is not None:
                return False
            with os.scandir(where) as entries:
                return next(entries, None) is None
        if (found.st_dev, found.st_ino) != (mark.dev, mark.ino):
            return False
        return mark.gen is None or _generation(where) == mark.gen

    def forget(self, path: Path) -> None:
        self._file(path).unlink(missing_ok=True)

    def forget_folder(self, removed: os.stat_result) -> None:
        """Forget the mark of a folder just removed, wherever it was moved since it was made."""
        try:
            files = list(self.folder.glob("*.json"))
        except OSError:
            return
        for file in files:
            mark = _read(file)
            if mark is not None and (mark.dev, mark.ino) == (removed.st_dev, removed.st_ino):
                file.unlink(missing_ok=True)

    def _write(self, path: Path, made: os.stat_result | None) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        record = {
            "path": _absolute(path),
            "dev": made.st_dev if made else None,
            "ino": made.st_ino if made else None,
            "gen": _generation(path) if made else None,
        }
        atomic_write(self._file(path), json.dumps(record).encode(), mode=0o600)


def _absolute(path: Path) -> str:
    # abspath, not resolve: a symlink on the way is never followed to name the folder.
    return os.path.abspath(path)


def _generation(path: Path) -> int | None:
    """The inode's generation, or None where the file system does not say."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        value: int = struct.unpack_from("I", fcntl.ioctl(fd, FS_IOC_GETVERSION, bytes(8)))[0]
        return value
    except OSError:
        return None
    finally:
        os.close(fd)


def _lstat(path: Path) -> os.stat_result | None:
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


@dataclass(frozen=True)
class _Mark:
    path: str
    dev: int | None
    ino: int | None
    gen: int | None


def _read(file: Path) -> _Mark | None:
    try:
        fd = os.open(file, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, MARK_MAX)
    finally:
        os.close(fd)
    try:
        mark = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(mark, dict) or not isinstance(mark.get("path"), str):
        return None
    dev, ino, gen = mark.get("dev"), mark.get("ino"), mark.get("gen")
    if not (dev is None and ino is None) and not (isinstance(dev, int) and isinstance(ino, int)):
        return None
    if gen is not None and not isinstance(gen, int):
        return None
    return _Mark(mark["path"], dev, ino, gen)


class MarkedWorkspace(LocalWorkspace):
    """The local workspace, which forgets a folder's mark once it has removed the folder, so
    marks do not pile up between two `launcher gc` (a run's settle removes its folders here)."""

    def __init__(self, marks: FolderMarks) -> None:
        self.marks = marks

    def remove_tree(self, path: Path) -> None:
        found = _lstat(path)
        super().remove_tree(path)
        if found is not None and stat.S_ISDIR(found.st_mode) and _lstat(path) is None:
            self.marks.forget_folder(found)

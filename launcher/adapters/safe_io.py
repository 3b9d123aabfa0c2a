"""Reading and writing files that another party may have tampered with.

Everything a run leaves behind is hostile input: it is opened with O_NOFOLLOW, must be a
regular file, and is read up to a size cap. Writes go to a temporary file in the same
folder, are fsynced, then renamed over the target, so a reader sees the old file or the
new one and never a half-written one.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

from launcher.errors import InvalidInputError


class UnsafeFileError(InvalidInputError):
    code = "unsafe-file"


class OverCapError(UnsafeFileError):
    """A file bigger than the cap it is read under; ``size`` as far as it was measured."""

    code = "over-cap"

    def __init__(self, message: str, *, size: int) -> None:
        super().__init__(message)
        self.size = size


COPY_CHUNK = 1 << 20


def open_untrusted(path: Path, *, single_link: bool = False) -> tuple[int, os.stat_result]:
    """An fd on ``path`` that is a regular file reached without following a symlink, and its stat."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # the last component is a symlink
            raise UnsafeFileError(f"{path} is a symbolic link; refusing to follow it") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        if single_link and info.st_nlink != 1:
            raise UnsafeFileError(f"{path} has {info.st_nlink} hard links; refusing it")
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def read_untrusted(path: Path, *, max_bytes: int, single_link: bool = False) -> bytes:
    """A small file another party wrote, whole (markers, task copies): never a bundle, which is
    streamed (``copy_untrusted``)."""
    fd, info = open_untrusted(path, single_link=single_link)
    try:
        if info.st_size > max_bytes:
            raise OverCapError(f"{path} is {info.st_size} bytes, over the {max_bytes}-byte cap", size=info.st_size)
        chunks, remaining = [], max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, COPY_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise OverCapError(f"{path} grew past the {max_bytes}-byte cap while being read", size=len(data))
        return data
    finally:
        os.close(fd)


def copy_untrusted(source: Path, target: Path, *, max_bytes: int, mode: int = 0o644) -> int:
    """Copy a file another party wrote to ``target`` (replaced atomically); the bytes copied.

    Streamed in bounded chunks, so memory does not grow with the file, and the cap is checked
    before and while copying: a file that grows past it mid-copy is refused too (``OverCapError``),
    and ``target`` is then left as it was.
    """
    fd, info = open_untrusted(source, single_link=True)
    try:
        if info.st_size > max_bytes:
            raise OverCapError(f"{source} is {info.st_size} bytes, over the {max_bytes}-byte cap", size=info.st_size)
        out_fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        try:
            copied = 0
            while True:
                chunk = os.read(fd, COPY_CHUNK)
                if not chunk:
                    break
                copied += len(chunk)
                if copied > max_bytes:
                    raise OverCapError(f"{source} grew past the {max_bytes}-byte cap while being copied", size=copied)
                view = memoryview(chunk)
                while view:
                    view = view[os.write(out_fd, view) :]
            os.fsync(out_fd)
            os.fchmod(out_fd, mode)
            os.close(out_fd)
            out_fd = -1
            os.replace(tmp, target)
        except BaseException:
            if out_fd >= 0:
                os.close(out_fd)
            tmp.unlink(missing_ok=True)
            raise
        _fsync_dir(target.parent)
        return copied
    finally:
        os.close(fd)


def take_untrusted(source: Path, target: Path, *, mode: int = 0o644) -> int:
    """Move a file another party wrote to ``target`` (same file system), made the host's own.

    For what is too big to copy (a bundle over its cap, kept for a later import): checked like
    a read (no symlink, a regular file with one link), then renamed, and its owner and mode
    reset through the checked descriptor so the party that wrote it can no longer change it
    through its permissions. Its size.
    """
    fd, info = open_untrusted(source, single_link=True)
    try:
        os.rename(source, target)
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
        return info.st_size
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write(path: Path, data: bytes, *, mode: int = 0o644, owner: tuple[int, int] | None = None) -> None:
    """Replace ``path`` with ``data`` atomically and durably; ``owner`` (uid, gid) before it appears."""
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        if owner is not None:
            os.chown(tmp, *owner)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(directory)


def read_untrusted_in(top: Path, parts: list[str], *, max_bytes: int) -> bytes | None:
    """Read ``top/parts…`` refusing a symlink at every step, not only the last one.

    Returns None when something on the way does not exist.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        dir_fd = os.open(top, flags | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    try:
        for part in parts[:-1]:
            if part in {"", ".", ".."} or "/" in part:
                raise UnsafeFileError(f"refusing path component {part!r}")
            try:
                next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise UnsafeFileError(f"{top}/{'/'.join(parts)}: {part} is not a plain folder") from exc
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=dir_fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise UnsafeFileError(f"{top}/{'/'.join(parts)} is a symbolic link or unreadable") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise UnsafeFileError(f"{top}/{'/'.join(parts)} is not a regular file")
            chunks, size = [], 0
            while size <= max_bytes and (chunk := os.read(fd, min(COPY_CHUNK, max_bytes + 1 - size))):
                chunks.append(chunk)
                size += len(chunk)
            if size > max_bytes:
                raise OverCapError(f"{top}/{'/'.join(parts)} is over the {max_bytes}-byte cap", size=size)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)

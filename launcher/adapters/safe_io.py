"""Reading and writing files that another party may have tampered with.

Everything a run leaves behind is hostile input: it is opened with O_NOFOLLOW, must be a
regular file, and is read up to a size cap. Writes go to a temporary file in the same
folder, are fsynced, then renamed over the target, so a reader sees the old file or the
new one and never a half-written one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

from launcher.errors import InvalidInputError


class UnsafeFileError(InvalidInputError):
    code = "unsafe-file"


def read_untrusted(path: Path, *, max_bytes: int, single_link: bool = False) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == 40:  # ELOOP: the last component is a symlink
            raise UnsafeFileError(f"{path} is a symbolic link; refusing to follow it") from exc
        raise
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UnsafeFileError(f"{path} is not a regular file")
        if single_link and info.st_nlink != 1:
            raise UnsafeFileError(f"{path} has {info.st_nlink} hard links; refusing it")
        if info.st_size > max_bytes:
            raise UnsafeFileError(f"{path} is {info.st_size} bytes, over the {max_bytes}-byte cap")
        chunks, remaining = [], max_bytes + 1
        while remaining > 0:
            chunk = os.read(fd, min(remaining, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        data = b"".join(chunks)
        if len(data) > max_bytes:
            raise UnsafeFileError(f"{path} grew past the {max_bytes}-byte cap while being read")
        return data
    finally:
        os.close(fd)


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
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


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
            data = os.read(fd, max_bytes + 1)
            if len(data) > max_bytes:
                raise UnsafeFileError(f"{top}/{'/'.join(parts)} is over the {max_bytes}-byte cap")
            return data
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)

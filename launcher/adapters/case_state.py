"""CaseStatePort on the local file system: one folder at a time, never through a symbolic link."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from launcher.adapters.safe_io import UnsafeFileError, read_untrusted_in
from launcher.errors import StateStoreError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _check_part(part: str) -> None:
    if part in {"", ".", ".."} or "/" in part or "\x00" in part:
        raise UnsafeFileError(f"refusing path component {part!r}")


@contextlib.contextmanager
def _folder(top: Path, parts: list[str], *, make: bool, owner: tuple[int, int] | None) -> Iterator[int | None]:
    """A descriptor of ``top/parts…`` (None where absent and not ``make``)."""
    try:
        fd = os.open(top, _DIR_FLAGS)
    except FileNotFoundError:
        if not make:
            yield None
            return
        raise
    try:
        for part in parts:
            _check_part(part)
            try:
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if not make:
                    yield None
                    return
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=fd)
                next_fd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                if owner is not None:
                    os.fchown(next_fd, *owner)
            except OSError as exc:
                raise UnsafeFileError(f"{top}/{'/'.join(parts)}: {part} is not a plain folder") from exc
            os.close(fd)
            fd = next_fd
        yield fd
    finally:
        os.close(fd)


def _on_host(what: str, path: Path) -> contextlib.AbstractContextManager[None]:
    @contextlib.contextmanager
    def guard() -> Iterator[None]:
        try:
            yield
        except UnsafeFileError:
            raise
        except OSError as exc:
            raise StateStoreError(f"cannot {what} {path}: {exc.strerror or exc}") from exc

    return guard()


class CaseStateFiles:
    def list_files(self, top: Path, parts: list[str]) -> list[str]:
        with _on_host("list", top.joinpath(*parts)), _folder(top, parts, make=False, owner=None) as fd:
            if fd is None:
                return []
            names = []
            for name in os.listdir(fd):
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(info.st_mode):
                    names.append(name)
            return sorted(names)

    def read(self, top: Path, parts: list[str], *, max_bytes: int) -> bytes | None:
        for part in parts:
            _check_part(part)
        with _on_host("read", top.joinpath(*parts)):
            return read_untrusted_in(top, parts, max_bytes=max_bytes)

    def _temp(self, fd: int, name: str, data: bytes, owner: tuple[int, int] | None) -> str:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        tmp_fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd)
        try:
            os.write(tmp_fd, data)
            os.fsync(tmp_fd)
            if owner is not None:
                os.fchown(tmp_fd, *owner)
        finally:
            os.close(tmp_fd)
        return tmp

    def write_new(self, top: Path, parts: list[str], data: bytes, *, owner: tuple[int, int] | None) -> bool:
        *folders, name = parts
        _check_part(name)
        with _on_host("write", top.joinpath(*parts)), _folder(top, folders, make=True, owner=owner) as fd:
            assert fd is not None
            tmp = self._temp(fd, name, data, owner)
            try:
                # link, not rename: it fails rather than replace a file that is there.
                os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp, dir_fd=fd)
            os.fsync(fd)
            return True

    def replace(self, top: Path, parts: list[str], data: bytes, *, owner: tuple[int, int] | None) -> None:
        *folders, name = parts
        _check_part(name)
        with _on_host("write", top.joinpath(*parts)), _folder(top, folders, make=True, owner=owner) as fd:
            assert fd is not None
            tmp = self._temp(fd, name, data, owner)
            try:
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            except BaseException:
                os.unlink(tmp, dir_fd=fd)
                raise
            os.fsync(fd)

    def append(self, top: Path, parts: list[str], data: bytes, *, owner: tuple[int, int] | None) -> None:
        *folders, name = parts
        _check_part(name)
        path = top.joinpath(*parts)
        with _on_host("append to", path), _folder(top, folders, make=True, owner=owner) as fd:
            assert fd is not None
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
            try:
                file_fd = os.open(name, flags, 0o644, dir_fd=fd)
            except OSError as exc:
                if exc.errno in {errno.ELOOP, errno.ENXIO}:
                    raise UnsafeFileError(f"{path} is a symbolic link or not a file") from exc
                raise
            try:
                info = os.fstat(file_fd)
                if not stat.S_ISREG(info.st_mode):
                    raise UnsafeFileError(f"{path} is not a regular file")
                if owner is not None and info.st_size == 0:
                    os.fchown(file_fd, *owner)
                fcntl.flock(file_fd, fcntl.LOCK_EX)
                view = memoryview(data)
                while view:
                    view = view[os.write(file_fd, view) :]
                os.fsync(file_fd)
            finally:
                os.close(file_fd)

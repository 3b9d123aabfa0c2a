"""What `launcher top` reads of a live run on the host: its log's tail, its egress refusals so far,
and how many commits its private git dir holds beyond its base.

The private git dir is the agent's to write: host git is never run on it (the threat model's
rule), so the commit count is read here from git's own file formats, as hostile input. Every
path component is opened relative to the one before it with O_NOFOLLOW (no symbolic link is
followed, not even in a folder), only regular files are read, each under a size cap, and the
walk over commits is bounded. Anything unexpected (a packed object, a file over its cap, a
link) gives no count rather than a wrong one.
"""

from __future__ import annotations

import os
import re
import stat
import zlib
from collections import deque
from pathlib import Path

from launcher.core.top_view import denials

TAIL_BYTES = 16 * 1024
REF_MAX = 4096
PACKED_REFS_MAX = 4 << 20
OBJECT_MAX = 4 << 20  # compressed; a commit's headers are read from its first HEADER_MAX bytes
HEADER_MAX = 64 * 1024
MAX_COMMITS = 10_000
EGRESS_READ_MAX = 1 << 20  # per refresh: a run that floods the proxy is counted over a few refreshes
_SHA = re.compile(rb"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_REF = re.compile(r"^refs/[A-Za-z0-9._/+@-]{1,200}$")
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def tail(path: Path, size: int = TAIL_BYTES) -> bytes:
    """The last ``size`` bytes of a log launcher writes (the run's output log); none if absent."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - size))
            return handle.read(size)
    except OSError:
        return b""


class DenialCounter:
    """Refusals in the egress proxy's live decision log, counted as it grows (whole lines only)."""

    def __init__(self) -> None:
        self.offset = 0
        self.count = 0
        self.path: Path | None = None

    def read(self, path: Path) -> int | None:
        if path != self.path:
            self.path, self.offset, self.count = path, 0, 0
        try:
            with open(path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(EGRESS_READ_MAX)
        except FileNotFoundError:
            return None if self.offset == 0 else self.count
        except OSError:
            return None
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        self.count += denials(whole.splitlines())
        return self.count


class _Unreadable(Exception):
    """Something in the private git dir that is not what git itself would have left."""


def _open_dir(parent: int, name: str) -> int | None:
    """A sub-folder (None: absent); a link, or anything else that is not a folder, is refused."""
    if name in ("", ".", "..") or "/" in name:
        raise _Unreadable(name)
    try:
        return os.open(name, _DIR, dir_fd=parent)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _Unreadable(name) from exc


def _read(top: int, parts: list[str], cap: int) -> bytes | None:
    """A regular file at ``parts`` under the folder ``top`` (None: absent), at most ``cap`` bytes."""
    fds: list[int] = []
    try:
        folder = top
        for part in parts[:-1]:
            opened = _open_dir(folder, part)
            if opened is None:
                return None
            fds.append(opened)
            folder = opened
        name = parts[-1]
        if name in ("", ".", "..") or "/" in name:
            raise _Unreadable(name)
        try:
            fd = os.open(name, _FILE, dir_fd=folder)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _Unreadable(name) from exc
        fds.append(fd)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > cap:
            raise _Unreadable(name)
        return os.read(fd, cap + 1)[:cap]
    finally:
        for fd in fds:
            os.close(fd)


def _ref_value(top: int, ref: str) -> bytes | None:
    if not _REF.match(ref) or ".." in ref:
        raise _Unreadable(ref)
    loose = _read(top, ref.split("/"), REF_MAX)
    if loose is not None:
        return loose.strip()
    packed = _read(top, ["packed-refs"], PACKED_REFS_MAX) or b""
    for line in packed.splitlines():
        sha, _, name = line.partition(b" ")
        if name == ref.encode():
            return sha
    return None


def _head(top: int) -> bytes:
    head = (_read(top, ["HEAD"], REF_MAX) or b"").strip()
    if head.startswith(b"ref: "):
        head = _ref_value(top, head[5:].decode("ascii", "replace")) or b""
    if not _SHA.match(head):
        raise _Unreadable("HEAD")
    return head


def _parents(top: int, sha: bytes) -> list[bytes] | None:
    """A loose commit's parents; None when the commit is not loose in the run's own objects
    (it is the repository's, through the alternates, or the run packed its objects)."""
    text = sha.decode()
    data = _read(top, ["objects", text[:2], text[2:]], OBJECT_MAX)
    if data is None:
        return None
    try:
        header = zlib.decompressobj().decompress(data, HEADER_MAX)
    except zlib.error as exc:
        raise _Unreadable(text) from exc
    kind, _, body = header.partition(b"\0")
    if not kind.startswith(b"commit "):
        raise _Unreadable(text)
    parents = []
    for line in body.split(b"\n\n", 1)[0].split(b"\n"):
        if line.startswith(b"parent "):
            parent = line[7:].strip()
            if not _SHA.match(parent):
                raise _Unreadable(text)
            parents.append(parent)
    return parents


def commits_so_far(git_dir: Path, base_sha: str) -> int | None:
    """Commits reachable from the private git dir's HEAD that the run made (loose in its own
    objects) and that are not its base: what its branch will gain at harvest, in the common case.
    None when that cannot be told safely (see the module's docstring)."""
    try:
        top = os.open(git_dir, _DIR)
    except OSError:
        return None
    try:
        head = _head(top)
        base = base_sha.encode()
        if head == base:
            return 0
        seen: set[bytes] = set()
        queue = deque([head])
        while queue:
            sha = queue.popleft()
            if sha == base or sha in seen:
                continue
            parents = _parents(top, sha)
            if parents is None:
                if sha == head:
                    return None  # HEAD moved, but not to a commit of its own: packed, or rewound
                continue
            seen.add(sha)
            if len(seen) > MAX_COMMITS:
                return None
            queue.extend(parents)
        return len(seen)
    except (_Unreadable, OSError):
        return None
    finally:
        os.close(top)

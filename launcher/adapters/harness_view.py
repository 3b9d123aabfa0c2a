"""The harness as a run sees it: a copy of the case root's tracked files, nothing else.

Mounting the case root itself showed every run everything under it: other repositories
(their remote URLs with tokens), untracked `.env` files, `launcher.toml` with a database
password. What git tracks in the harness is what the harness *is* (prompts, scripts, schema);
the copy holds exactly that, as it is in the working tree (uncommitted edits included).
Submodules and nested repositories are not the harness's files and are left out; symlinks are
copied as symlinks (they resolve inside the run's container, never on the host).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from launcher.adapters.git import Repository
from launcher.core.ports.harness import MountPoint
from launcher.errors import HostStorageError, InvalidInputError

_GITLINK = b"160000"  # a submodule: another repository, not the harness's files
COPY_CHUNK = 1024 * 1024


class HarnessView:
    def __init__(self, root: Path, lock_dir: Path) -> None:
        self.root = root
        self.lock_dir = lock_dir

    def export(self, dest: Path, keep: Callable[[str], bool], mount_points: Mapping[str, MountPoint]) -> bool:
        try:
            dest.mkdir(parents=True, exist_ok=True)
            tracked = self._copy_tracked(dest, keep)
            for rel, kind in mount_points.items():
                point = dest / rel
                if point.exists() or point.is_symlink():
                    continue
                point.parent.mkdir(parents=True, exist_ok=True)
                if kind == "dir":
                    point.mkdir()
                else:
                    point.touch()
        except OSError as exc:
            raise HostStorageError.of(exc, "copy the harness for the run") from exc
        return tracked

    def _copy_tracked(self, dest: Path, keep: Callable[[str], bool]) -> bool:
        try:
            repo = Repository.open(self.root, lock_dir=self.lock_dir)
        except InvalidInputError:
            return False  # not in a git checkout: the harness tracks nothing
        real_root = self.root.resolve()
        inside = real_root.relative_to(repo.toplevel)
        prefix = "" if str(inside) == "." else f"{inside.as_posix()}/"
        listing = repo.git("ls-files", "-s", "-z", "--full-name", "--", prefix or ".").stdout
        for entry in listing.split(b"\0"):
            if not entry:
                continue
            meta, _, raw_path = entry.partition(b"\t")
            path = raw_path.decode("utf-8", "surrogateescape")
            if meta.split(b" ", 1)[0] == _GITLINK or not path.startswith(prefix):
                continue
            rel = path[len(prefix) :]
            # A folder on the way turned into a symlink since it was committed: not followed.
            if keep(rel) and (real_root / rel).parent.resolve() == (real_root / rel).parent:
                _copy_one(real_root / rel, dest / rel)
        return True


def _copy_one(source: Path, target: Path) -> None:
    """One tracked path as it is now: a regular file (its mode bits kept) or a symlink; a
    path deleted in the working tree, or turned into a folder, is not copied."""
    try:
        info = source.lstat()
    except FileNotFoundError:
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if stat.S_ISLNK(info.st_mode):
        os.symlink(os.readlink(source), target)
        return
    if not stat.S_ISREG(info.st_mode):
        return
    # O_NOFOLLOW on the last step: a path swapped for a link since the listing is not followed.
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as src, open(target, "xb") as out:
        shutil.copyfileobj(src, out, COPY_CHUNK)
    os.chmod(target, stat.S_IMODE(info.st_mode) & 0o777)

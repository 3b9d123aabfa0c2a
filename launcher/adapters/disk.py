"""How much disk a run's folders hold, and how much the case root's file system has left."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def tree_bytes(tops: Iterable[Path]) -> int:
    """Bytes the files under ``tops`` occupy (allocated blocks: sparse files count as written).

    Never follows a symlink, never crosses into another file system (a mount an agent could
    not make anyway, but a folder on another device is not this budget's), and a file removed
    while it is counted is simply not counted.
    """
    total = 0
    for top in tops:
        try:
            device = top.lstat().st_dev
        except FileNotFoundError:
            continue
        for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
            for name in filenames:
                try:
                    total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
                except FileNotFoundError:
                    continue
            kept = []
            for name in dirnames:
                try:
                    if os.lstat(os.path.join(dirpath, name)).st_dev == device:
                        kept.append(name)
                except FileNotFoundError:
                    continue
            dirnames[:] = kept
    return total


def free_bytes(path: Path) -> int:
    """What an unprivileged writer can still write on ``path``'s file system."""
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def size_bytes(path: Path) -> int:
    """The size of ``path``'s file system."""
    info = os.statvfs(path)
    return info.f_blocks * info.f_frsize

"""Which uid runs what: runs, warm pool slots and the egress proxy never share one.

    uid_base - 1                                  the egress proxy
    uid_base .. uid_base + uid_span - 1           runs (uid_base + run number % uid_span)
    uid_base + uid_span .. + uid_span - 1         warm pool slots

An unprivileged launcher cannot hand files to other uids, so everything then runs as its own.
"""

from __future__ import annotations

import os
from collections.abc import Collection

from launcher.errors import InvalidInputError
from launcher.settings import RunDefaults

Ids = tuple[int, int]


def privileged() -> bool:
    return os.geteuid() == 0


def own_ids() -> Ids:
    return os.getuid(), os.getgid()


def run_ids(seq: int, defaults: RunDefaults) -> Ids:
    if not privileged():
        return own_ids()
    uid = defaults.uid_base + seq % defaults.uid_span
    return uid, uid


def ids_of(uid: int) -> Ids:
    """The uid and gid a recorded run (or slot) ran as."""
    return (uid, uid) if privileged() else (uid, os.getgid())


def free_slot_ids(defaults: RunDefaults, taken: Collection[int]) -> Ids:
    """A pool slot's uid that no slot or live run holds."""
    if not privileged():
        return own_ids()
    first = defaults.uid_base + defaults.uid_span
    for uid in range(first, first + defaults.uid_span):
        if uid not in taken:
            return uid, uid
    raise InvalidInputError("no free uid for a pool slot", hint="raise [run].uid_span")


def proxy_ids(defaults: RunDefaults) -> Ids:
    """Not root, and not any run's uid."""
    if not privileged():
        return own_ids()
    return defaults.uid_base - 1, defaults.uid_base - 1

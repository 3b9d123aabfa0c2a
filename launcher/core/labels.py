"""Every label launcher puts on the engine's objects, in one namespace that is launcher's alone.

gc and `rm` find what belongs to a root and a run by these labels, never by names, so a label
is a promise: each key here means one thing, and nothing else may use the namespace.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, get_args

from launcher.errors import InvalidInputError

NAMESPACE = "launcher."
ROOT = "launcher.root"  # the case root an object belongs to
KIND = "launcher.kind"  # one of Kind
RUN_ID = "launcher.run-id"
TASK_ID = "launcher.task-id"
POOL_SLOT = "launcher.pool-slot"
SUBNET = "launcher.subnet"  # a run or slot network's /28
PROXY_IP = "launcher.proxy-ip"  # where the egress proxy sits on that network
PROXY_CONFIG = "launcher.proxy-config"  # fingerprint of the proxy's settings and program
IMAGE = "launcher.image"  # on images: the images/ folder it was built from
CONTENT_HASH = "launcher.content-hash"  # on images: the hash of that folder

# A run's sidecars ("service", "port-relay") carry its run label: gc and `rm` remove them with it.
Kind = Literal[
    "run",
    "harvest",
    "pool",
    "egress-proxy",
    "run-network",
    "pool-network",
    "spare-network",
    "check",
    "service",
    "port-relay",
]
KINDS: frozenset[str] = frozenset(get_args(Kind))
KNOWN: frozenset[str] = frozenset(
    {ROOT, KIND, RUN_ID, TASK_ID, POOL_SLOT, SUBNET, PROXY_IP, PROXY_CONFIG, IMAGE, CONTENT_HASH}
)
# A spare network ([network] spare_networks) belongs to no run by label: the coordinator's
# subnet lease says whose it is now (a run's ID, or spare:NAME while it waits for one).
RUN_NETWORK_KINDS = frozenset({"run-network", "pool-network", "spare-network"})


def root_tag(root: Path) -> str:
    """A short, stable tag of a case root, for names that must not clash across roots."""
    return hashlib.sha256(str(root).encode()).hexdigest()[:8]


def for_root(root: Path, kind: Kind, **extra: str) -> dict[str, str]:
    return {ROOT: str(root), KIND: kind, **extra}


def for_run(root: Path, run_id: str, task_id: str, kind: Kind = "run") -> dict[str, str]:
    return for_root(root, kind, **{RUN_ID: run_id, TASK_ID: task_id})


def checked(labels: Mapping[str, str]) -> dict[str, str]:
    """``labels`` as given, if they keep the namespace's rules: known keys only, a root and a kind.

    Called where containers and networks are created, so an object gc could misread (or one it
    could never find) is never made.
    """
    unknown = sorted(k for k in labels if k.startswith(NAMESPACE) and k not in KNOWN)
    if unknown:
        raise InvalidInputError(f"labels {unknown} are in launcher's reserved namespace {NAMESPACE!r}")
    if ROOT not in labels or labels.get(KIND) not in KINDS:
        raise InvalidInputError(f"an object launcher creates needs {ROOT} and a known {KIND}, got {dict(labels)}")
    return dict(labels)

"""Where the launch service of this user and this installed launcher listens (stdlib only).

The socket's folder is the user's alone (0700, owned by them, not a symlink) or not used at all;
the socket's name carries a fingerprint of the installed launcher (interpreter, package folder,
every module's size and modification time) and of the caller's context (``caller_context``), so
a service never serves code older than what is installed, nor a caller it differs from: an
upgraded or edited launcher gets a new service and the old one idles out.
"""

from __future__ import annotations

import hashlib
import os
import stat
import sys

SERVICE_ENV = "LAUNCHER_SERVICE"
IDLE_S = 300.0
IDLE_ENV = "LAUNCHER_SERVICE_IDLE"  # seconds a service started now waits for a command before it exits
ON = frozenset({"1", "on", "true", "yes", "verbose"})
# os.path, not pathlib: this is imported by every `launcher` before it knows it needs more.
PACKAGE = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
# Environment that shapes the interpreter at its start (a served command's is already made).
CONTEXT_PREFIXES = ("PYTHON", "LC_")
CONTEXT_NAMES = frozenset({"LANG"})
RLIMITS = ("RLIMIT_NOFILE", "RLIMIT_NPROC", "RLIMIT_CORE", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_STACK", "RLIMIT_CPU")


def wanted(env: dict[str, str] | os._Environ[str]) -> bool:
    return env.get(SERVICE_ENV, "").strip().lower() in ON


def verbose(env: dict[str, str] | os._Environ[str]) -> bool:
    return env.get(SERVICE_ENV, "").strip().lower() == "verbose"


def folder() -> str | None:
    """The user's folder for the service's socket, made if need be; None when it is not safely
    the user's alone (then there is no service, and launcher runs in its own process)."""
    uid = os.getuid()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        place = os.path.join(runtime, "launcher")
    else:
        place = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"launcher-{uid}")
    try:
        os.mkdir(place, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    try:
        found = os.lstat(place)
    except OSError:
        return None
    if not stat.S_ISDIR(found.st_mode) or found.st_uid != uid or found.st_mode & 0o077:
        return None
    return place


def caller_context(env: dict[str, str] | os._Environ[str]) -> str:
    """What a served command would otherwise not share with its caller, since it is the
    service's child: groups, resource limits, cgroup, namespaces and what configures the
    interpreter. A caller
    that differs in any of them has a service of its own (started by it, so inside its cgroup:
    a CI job's service goes with the job)."""
    import resource

    parts = [f"gid={os.getgid()}", f"groups={sorted(os.getgroups())}"]
    parts += [f"{name}={resource.getrlimit(getattr(resource, name))}" for name in RLIMITS if hasattr(resource, name)]
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as cgroup:
            parts.append(cgroup.read())
    except OSError:
        parts.append("cgroup=?")
    for kind in ("mnt", "pid", "net", "user"):
        try:
            parts.append(os.readlink(f"/proc/self/ns/{kind}"))
        except OSError:
            parts.append(f"{kind}=?")
    parts += [f"{k}={v}" for k, v in sorted(env.items()) if k.startswith(CONTEXT_PREFIXES) or k in CONTEXT_NAMES]
    return "\0".join(parts)


def fingerprint(package: str | os.PathLike[str] = PACKAGE, context: str = "") -> str:
    digest = hashlib.sha256(f"{sys.executable}\0{package}\0{context}\0".encode())
    for top, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            if name.endswith((".py", ".sh")):
                found = os.stat(os.path.join(top, name))
                digest.update(f"{top}/{name}\0{found.st_size}\0{found.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def socket_path(place: str, print_: str) -> str:
    return os.path.join(place, f"launch-{print_}.sock")


def idle_seconds(env: dict[str, str] | os._Environ[str]) -> float:
    try:
        value = float(env.get(IDLE_ENV, IDLE_S))
    except ValueError:
        return IDLE_S
    return value if value > 0 else IDLE_S

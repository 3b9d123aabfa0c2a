"""The launch service's process: launcher's modules loaded once, one forked child per command.

One at a time per socket (a lock beside it); it exits after ``idle_s`` seconds
(``LAUNCHER_SERVICE_IDLE``, 300) with no command served and none running, and removes its
socket. Single-threaded, so every fork copies a process with no lock held by another thread; it
opens no connection of its own (no coordinator, no engine): each child opens its own, as a fresh
``launcher`` would.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib
import io
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from launcher.service import place, wire

REQUEST_TIMEOUT_S = 5.0
# What a `launcher run` needs, loaded before any command comes (a module missing from an
# install without some extra is skipped: the child imports what it needs in any case).
PRELOAD = (
    "launcher.cli",
    "launcher.cli.app_context",
    "launcher.cli.run_cmd",
    "launcher.core.run.service",
    "launcher.core.run.execute",
    "launcher.core.run.settle",
    "launcher.core.run.teardown",
    "launcher.core.egress",
    "launcher.core.netpolicy",
    "launcher.adapters.docker",
    "launcher.adapters.docker.client",
    "launcher.adapters.docker.sandbox",
    "launcher.adapters.docker.egress",
    "launcher.adapters.store.sqlite",
    "launcher.adapters.git",
    "docker",
)


@dataclass
class Served:
    pid: int
    conn: socket.socket
    pidfd: int
    hung_up: bool = False


def serve(path: Path, idle_s: float = place.IDLE_S) -> int:
    lock_path = f"{path}.lock"
    lock_fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # A service that exits removes its lock file while it holds it: one locked after that
        # holds a file nobody else will open, and leaves the socket to whoever made a new one.
        if os.stat(lock_path).st_ino != os.fstat(lock_fd).st_ino:
            raise BlockingIOError
    except (BlockingIOError, FileNotFoundError):
        os.close(lock_fd)
        return 0  # another one serves this socket
    try:
        os.close(os.pidfd_open(os.getpid()))  # how it waits for its commands (Linux 5.3+)
    except (AttributeError, OSError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(lock_fd)
        return 1
    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        listener.bind(str(path))
    finally:
        os.umask(old)
    listener.listen(64)
    ours = os.stat(path).st_ino
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    served: dict[int, Served] = {}  # by pidfd
    idle_since = time.monotonic()
    try:
        while True:
            timeout = None if served else idle_s - (time.monotonic() - idle_since)
            if timeout is not None and timeout <= 0:
                return 0
            for key, _ in selector.select(timeout):
                if key.data is None:
                    _accept(listener, selector, served)
                    continue
                what, pidfd = key.data
                command = served.get(pidfd)
                if command is None:
                    continue  # reaped earlier in this same batch of events
                if what == "exited":
                    _reap(served.pop(pidfd), selector)
                    idle_since = time.monotonic()
                elif not command.hung_up:
                    _read_caller(command, selector)
    finally:
        with contextlib.suppress(FileNotFoundError):
            if os.stat(path).st_ino == ours:
                path.unlink()
        listener.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock_path)
        os.close(lock_fd)


def _accept(listener: socket.socket, selector: selectors.BaseSelector, served: dict[int, Served]) -> None:
    try:
        conn, _ = listener.accept()
    except OSError:
        return
    fds: list[int] = []
    try:
        conn.settimeout(REQUEST_TIMEOUT_S)
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        uid = int.from_bytes(creds[4:8], sys.byteorder)
        if uid != os.getuid():
            raise ValueError(f"uid {uid} is not this service's user")
        request, fds = wire.receive_request(conn)
        pid = os.fork()
    except (OSError, ValueError) as exc:
        with contextlib.suppress(OSError):
            conn.sendall(f"refused {exc}\n".encode())
        conn.close()
        for fd in fds:
            os.close(fd)
        return
    if pid == 0:
        _child(request, fds)
    for fd in fds:
        os.close(fd)
    pidfd = os.pidfd_open(pid)
    conn.settimeout(None)
    with contextlib.suppress(OSError):
        # A caller gone already is told nothing: the hang-up that follows tells the command.
        conn.sendall(f"pid {pid}\n".encode())
    served[pidfd] = Served(pid, conn, pidfd)
    selector.register(pidfd, selectors.EVENT_READ, ("exited", pidfd))
    selector.register(conn, selectors.EVENT_READ, ("caller", pidfd))


def _reap(gone: Served, selector: selectors.BaseSelector) -> None:
    _, status = os.waitpid(gone.pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with contextlib.suppress(KeyError, ValueError):
        selector.unregister(gone.conn)
    selector.unregister(gone.pidfd)
    os.close(gone.pidfd)
    with contextlib.suppress(OSError):
        # A command killed by a signal: its caller dies of the same signal.
        gone.conn.sendall((f"exit {code}\n" if code >= 0 else f"signal {-code}\n").encode())
    gone.conn.close()


def _read_caller(caller: Served, selector: selectors.BaseSelector) -> None:
    """The caller's connection is readable. Callers send nothing after the request, so what
    comes is dropped; its end (the caller closed it, or died) hangs the command up."""
    try:
        if caller.conn.recv(4096):
            return
    except OSError:
        pass
    selector.unregister(caller.conn)
    caller.hung_up = True
    with contextlib.suppress(ProcessLookupError):
        os.killpg(caller.pid, signal.SIGHUP)


def _child(request: wire.Request, fds: list[int]) -> None:
    """Become the command the caller asked for, as `launcher` would have run it; never returns."""
    status = 1
    try:
        # The caller's stdin, stdout and stderr; then every descriptor of the service closed
        # (its socket, lock, selector, the other commands' connections).
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))
        os.setpgid(0, 0)  # its own process group: the caller's signals go to it and its children
        _become(request)
        from launcher.cli import main

        main()  # ends the process itself, with the command's status
        status = 0
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        with contextlib.suppress(Exception):
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _become(request: wire.Request) -> None:
    # A fresh interpreter's signal dispositions, not the service's.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(request.env)
    os.umask(request.umask)
    os.chdir(request.cwd)
    sys.argv = ["launcher", *request.argv]
    # Streams as the interpreter makes them at start: line-buffered on a terminal; stderr always.
    # sys.__stdin__ and the others stay the service's objects: on fds 0-2, now the caller's.
    sys.stdin = io.TextIOWrapper(io.BufferedReader(io.FileIO(0, "r", closefd=False)), encoding="utf-8")
    sys.stdout = _writer(1, errors="strict")
    sys.stderr = _writer(2, errors="backslashreplace", line_buffering=True)


def _writer(fd: int, *, errors: str, line_buffering: bool = False) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        io.BufferedWriter(raw), encoding="utf-8", errors=errors, line_buffering=line_buffering or raw.isatty()
    )

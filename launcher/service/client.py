"""The ``launcher`` console script: through the launch service when it is wanted and up, else
launcher's CLI in this process (as always). Standard library only until it falls back.

With ``LAUNCHER_SERVICE=on`` and no service listening, this command runs in its own process and
starts the service, detached, for the commands after it. Signals this process gets (Ctrl-C,
SIGTERM, SIGHUP) go to the served command's process group, as a terminal would send them; if
this process dies, the service hangs the command up (SIGHUP), as a closed terminal would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sys
from collections.abc import Iterator

from launcher.service import place, wire

# Signals a terminal or a job runner sends its foreground job; SIGCONT after a Ctrl-Z stop.
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGWINCH, signal.SIGCONT)
# What the caller gets when the service went away before the command it served ended.
LOST_SERVICE_EXIT = 1
INTERRUPTED_EXIT = 130  # launcher.errors.ExitCode.INTERRUPTED (tests/service checks): not imported here


def main() -> None:
    if place.wanted(os.environ):
        try:
            code = _through_service()
        except KeyboardInterrupt:
            # Before the command's pid came back: a command forked meanwhile is hung up (its
            # caller's connection closed), as its run is when its caller dies.
            print("launcher: interrupted", file=sys.stderr)
            sys.exit(INTERRUPTED_EXIT)
        if code is not None:
            sys.exit(code)
    from launcher.cli import main as in_this_process

    in_this_process()


def _through_service() -> int | None:
    """The served command's exit status; None when there is no service to serve it."""
    folder = place.folder()
    if folder is None:
        return None
    path = place.socket_path(folder, place.fingerprint(context=place.caller_context(os.environ)))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        sock.close()
        _start_service(path)
        return None
    except OSError:
        sock.close()
        return None
    try:
        cwd = os.getcwd()
    except OSError:
        sock.close()
        return None  # a working folder that is gone: launcher in this process says what it can
    with sock, _standard_fds() as fds:
        request = wire.Request(argv=sys.argv[1:], cwd=cwd, env=dict(os.environ), umask=_umask())
        try:
            wire.send_request(sock, request, fds)
        except OSError:
            return None  # it went away between connect and send: nothing ran
        return _relay(sock)


def _relay(sock: socket.socket) -> int | None:
    lines = sock.makefile("r", encoding="ascii", newline="\n")
    first = lines.readline().split()
    if first[:1] != ["pid"] or len(first) != 2 or not first[1].isdigit():
        # Nothing ran: refused (a request it could not take), or it was exiting, idle, as this
        # one connected. This process runs the command instead.
        if place.verbose(os.environ):
            print(f"launcher: the launch service did not serve this: {' '.join(first) or 'no answer'}", file=sys.stderr)
        return None
    pid = int(first[1])
    if place.verbose(os.environ):
        print(f"launcher: served by the launch service (pid {pid})", file=sys.stderr)

    def forward(signum: int, _frame: object) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signum)

    def suspend(_signum: int, _frame: object) -> None:
        # Ctrl-Z: the served command stops with its caller, and goes on with it (SIGCONT).
        forward(signal.SIGSTOP, None)
        os.kill(os.getpid(), signal.SIGSTOP)

    for signum in FORWARDED:
        signal.signal(signum, forward)
    signal.signal(signal.SIGTSTP, suspend)
    while True:
        try:
            line = lines.readline()
        except InterruptedError:
            continue
        if not line:
            print(
                f"launcher: the launch service ended before the command it served (pid {pid}); "
                "`launcher ps` shows what became of a run",
                file=sys.stderr,
            )
            return LOST_SERVICE_EXIT
        kind, _, value = line.strip().partition(" ")
        if kind == "exit":
            return int(value)
        if kind == "signal":
            # As its own process would have: its caller sees the same end (a shell says 128+N).
            killed_by = int(value)
            with contextlib.suppress(OSError, ValueError):  # SIGKILL and SIGSTOP have no handler
                signal.signal(killed_by, signal.SIG_DFL)
            with contextlib.suppress(OSError, ValueError):
                os.kill(os.getpid(), killed_by)
            return 128 + killed_by


@contextlib.contextmanager
def _standard_fds() -> Iterator[list[int]]:
    """This process's stdin, stdout and stderr, a /dev/null in place of any that is closed."""
    opened: list[int] = []
    fds: list[int] = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            opened.append(null)
            fds.append(null)
    try:
        yield fds
    finally:
        for fd in opened:
            os.close(fd)


def _umask() -> int:
    current = os.umask(0o022)
    os.umask(current)
    return current


def _start_service(path: str) -> None:
    """Start the service detached (its own session, no terminal), with only what it needs of
    this environment: each command it serves brings its own."""
    keep = ("PATH", "HOME", "XDG_RUNTIME_DIR", "TMPDIR")
    env = {
        name: value
        for name, value in os.environ.items()
        if name in keep or name in place.CONTEXT_NAMES or name.startswith(place.CONTEXT_PREFIXES)
    }
    import subprocess

    with contextlib.suppress(OSError):
        subprocess.Popen(
            [sys.executable, "-m", "launcher.service", path, str(place.idle_seconds(os.environ))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd="/",
        )

"""The launch service (LAUNCHER_SERVICE=on): real processes, real sockets, the real console
script. A served command behaves as the same command run in its own process: its output, its
exit status, its environment and working folder; nothing is served when the service is not
wanted, or when its folder is not the user's alone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import wait_for
from launch_service_kit import SCRIPT, Service, launcher, served_pid, without_served_line
from launch_service_kit import launch_service as service

from launcher.errors import ExitCode
from launcher.service import place

__all__ = ["service"]
pytestmark = pytest.mark.skipif(SCRIPT is None, reason="launcher's console script is not installed beside this Python")


def test_without_the_setting_nothing_is_served_or_started(service: Service) -> None:
    done = launcher("--version", env=service.env(mode="off"))
    assert done.returncode == 0, done.stderr
    assert served_pid(done.stderr) is None
    assert not service.folder.exists(), "no service folder, no service started"


def test_a_served_command_has_the_callers_output_status_environment_folder(service: Service, tmp_path: Path) -> None:
    service.start()
    root = tmp_path / "case"
    root.mkdir()
    env = service.env(CASE_ROOT=str(root))
    direct_env = {**env, "LAUNCHER_SERVICE": "off"}

    for args, cwd in ((["init", "--json"], None), (["task", "list", "--json"], root), (["run", "nope-1"], root)):
        direct = launcher(*args, env=direct_env, cwd=cwd)
        served = launcher(*args, env=env, cwd=cwd)
        assert served_pid(served.stderr) is not None, served.stderr
        assert served.returncode == direct.returncode, served.stderr
        if args[0] != "init":  # init says what it made the first time and what it found the second
            assert served.stdout == direct.stdout
            assert without_served_line(served.stderr) == direct.stderr
    assert launcher("run", "nope-1", env=env, cwd=root).returncode == ExitCode.NOT_FOUND
    # The working folder is the caller's: `--root .` from inside the case root.
    listed = launcher("--root", ".", "task", "list", "--json", env={**env, "CASE_ROOT": "/nonexistent"}, cwd=root)
    assert listed.returncode == 0, listed.stderr
    assert served_pid(listed.stderr) is not None


def test_the_first_command_runs_itself_and_starts_a_service_that_idles_out(service: Service) -> None:
    env = service.env(LAUNCHER_SERVICE_IDLE="3")
    first = launcher("--version", env=env)
    assert first.returncode == 0, first.stderr
    assert served_pid(first.stderr) is None, "no service yet: the first command ran in its own process"
    (socket_path,) = wait_for(service.sockets, timeout=60, what="the service the first command started")
    second = launcher("--version", env=env)
    assert (second.returncode, second.stdout) == (0, first.stdout)
    assert served_pid(second.stderr) is not None, second.stderr
    # Idle for 3 s: it exits by itself and takes its socket with it.
    wait_for(lambda: not socket_path.exists(), timeout=60, what="the idle service to exit")
    third = launcher("--version", env=env)
    assert third.returncode == 0
    assert served_pid(third.stderr) is None
    wait_for(service.sockets, timeout=60, what="a new service")
    wait_for(lambda: not service.sockets(), timeout=60, what="the new service to idle out too")


def test_a_folder_that_is_not_the_users_alone_is_never_used(service: Service) -> None:
    service.folder.mkdir(mode=0o755)
    service.folder.chmod(0o755)
    done = launcher("--version", env=service.env())
    assert done.returncode == 0, done.stderr
    assert served_pid(done.stderr) is None
    assert service.sockets() == [], "nothing listens in a folder others can enter"


def test_a_service_that_is_gone_leaves_a_dead_socket_the_next_command_replaces(service: Service) -> None:
    path = service.start()
    assert service.proc is not None
    service.proc.kill()
    service.proc.wait(timeout=30)
    assert path.is_socket(), "a killed service cannot remove its socket"
    env = service.env(LAUNCHER_SERVICE_IDLE="3")
    done = launcher("--version", env=env)
    assert done.returncode == 0, done.stderr
    assert served_pid(done.stderr) is None
    wait_for(lambda: served_pid(launcher("--version", env=env).stderr) is not None, timeout=60, what="a new service")
    wait_for(lambda: not service.sockets(), timeout=60, what="the new service to idle out")


def test_a_changed_module_changes_the_fingerprint(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    module = package / "sub" / "mod.py"
    module.write_text("A = 1\n")
    before = place.fingerprint(package)
    assert place.fingerprint(package) == before
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert place.fingerprint(package) != before, "an edited or upgraded launcher is a new service"


def test_the_console_scripts_own_exit_codes_are_launchers() -> None:
    from launcher.service import client

    assert client.INTERRUPTED_EXIT == ExitCode.INTERRUPTED


@pytest.mark.skipif(
    os.getuid() != 0, reason="needs root, to connect as another uid (this machine runs tests as a user)"
)
def test_a_caller_of_another_uid_is_refused_before_anything_runs(tmp_path: Path) -> None:
    import contextlib
    import shutil
    import socket
    import subprocess
    import sys
    import tempfile

    from launcher.service import wire

    # Served from a folder every uid can enter (the console script never uses such a folder):
    # only the uid check stands between this caller and the service.
    shared = Path(tempfile.mkdtemp(prefix="launcher-service-", dir="/tmp"))  # pytest's own folders are 0700
    shared.chmod(0o755)
    path = shared / "launch-test.sock"
    server = subprocess.Popen([sys.executable, "-m", "launcher.service", str(path), "60"])
    try:
        wait_for(path.is_socket, timeout=60, what="the service's socket")
        path.chmod(0o777)
        marker = tmp_path / "ran"
        answer_read, answer_write = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the other uid's caller
            try:
                os.setgid(65534)
                os.setuid(65534)
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                    sock.connect(str(path))
                    request = wire.Request(argv=["init"], cwd="/", env={"CASE_ROOT": str(marker)}, umask=0o022)
                    # The service may refuse (and close) before all of it is sent.
                    with contextlib.suppress(BrokenPipeError):
                        wire.send_request(sock, request, [0, 1, 2])
                    os.write(answer_write, sock.makefile("rb").readline())
            finally:
                os._exit(0)
        os.close(answer_write)
        os.waitpid(pid, 0)
        answer = os.read(answer_read, 4096).decode()
        assert answer.startswith("refused uid 65534"), answer
        assert not marker.exists(), "nothing ran for the other uid"
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(shared, ignore_errors=True)


def test_one_service_per_socket_and_an_idle_one_leaves_nothing(service: Service) -> None:
    import subprocess
    import sys

    path = service.start(idle=2)
    second = subprocess.run(
        [sys.executable, "-m", "launcher.service", str(path), "2"], env=service.env(), timeout=60, check=False
    )
    assert second.returncode == 0, "a second service for one socket leaves at once"
    assert service.proc is not None
    assert service.proc.wait(timeout=60) == 0, "the first one serves on, then idles out"
    assert list(service.folder.iterdir()) == [], "neither its socket nor its lock file is left"


def test_what_a_caller_sends_after_its_request_is_dropped_and_its_command_goes_on(service: Service) -> None:
    import socket

    from launcher.service import wire

    path = service.start()
    out_read, out_write = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(str(path))
            request = wire.Request(argv=["--version"], cwd="/", env=service.env(), umask=0o022)
            wire.send_request(sock, request, [0, out_write, 2])
            os.close(out_write)
            sock.sendall(b"not part of any request\n")
            answers = sock.makefile("r").read().split("\n")
        assert answers[0].startswith("pid "), answers
        assert answers[1] == "exit 0", answers
        assert os.read(out_read, 4096).decode().startswith("launcher ")
    finally:
        os.close(out_read)
    assert served_pid(launcher("--version", env=service.env()).stderr) is not None, "it serves on"


@pytest.mark.parametrize(
    "document",
    [
        b"[]",
        b'{"argv": "init", "cwd": "/", "env": {}, "umask": 18}',
        b'{"argv": ["init"], "cwd": "relative", "env": {}, "umask": 18}',
        b'{"argv": ["init"], "cwd": "/", "env": {"A": 1}, "umask": 18}',
        b'{"argv": ["init"], "cwd": "/", "env": {}, "umask": true}',
        b'{"argv": ["init"], "cwd": "/", "env": {}, "umask": 18, "extra": 1}',
    ],
)
def test_a_malformed_request_is_refused_before_anything_is_forked(document: bytes) -> None:
    from launcher.service import wire

    with pytest.raises(ValueError):
        wire.Request.parse(document)

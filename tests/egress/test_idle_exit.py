"""The proxy exits by itself once no run needs it, and never while a launcher is starting one.

The program runs here as its container runs it (egress_kit.proxy_command); the launcher's side
of the hand-over (DockerEgress.attach_proxy) runs against a stand-in engine.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from egress_kit import proxy_command

from launcher.adapters.docker import egress_proxy_sha256, install_egress_proxy
from launcher.adapters.docker.egress import DockerEgress, ProxySettings
from launcher.core import labels
from launcher.egress.idle import EXITING, IDLE_LOCK

IDLE = 0.3
# Long enough for several idle periods to pass: what must not happen in it would have.
STAYS = 8 * IDLE
DEADLINE = 30.0

# Each test starts the proxy program in processes of its own.
pytestmark = pytest.mark.slow


@contextmanager
def proxy(tmp_path: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    policies, logs = tmp_path / "policies", tmp_path / "logs"
    policies.mkdir(exist_ok=True)
    logs.mkdir(exist_ok=True)
    command = [*proxy_command(tmp_path / "state"), "--listen", "127.0.0.1:0"]
    command += ["--policies", str(policies), "--logs", str(logs), *extra]
    with subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={}) as proc:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("egress proxy listening on 127.0.0.1:")
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()


def stays_up(proc: subprocess.Popen[str]) -> bool:
    try:
        proc.wait(STAYS)
    except subprocess.TimeoutExpired:
        return True
    return False


def test_an_idle_proxy_exits_by_itself_with_status_0_and_marks_it(tmp_path: Path) -> None:
    with proxy(tmp_path, "--idle-exit", str(IDLE)) as proc:
        assert proc.wait(DEADLINE) == 0, "exit 0: the container's restart policy (on-failure) leaves it stopped"
        assert proc.stderr is not None
        assert "exiting" in proc.stderr.read()
    assert (tmp_path / "logs" / IDLE_LOCK).read_bytes() == EXITING


def test_without_idle_exit_the_proxy_serves_on(tmp_path: Path) -> None:
    with proxy(tmp_path) as proc:
        assert stays_up(proc)


def test_a_run_keeps_the_proxy_until_its_policy_is_gone(tmp_path: Path) -> None:
    policy = tmp_path / "policies" / "R-1.json"
    policy.parent.mkdir()
    policy.write_text("{}")  # unreadable as a policy, but a run is there all the same
    with proxy(tmp_path, "--idle-exit", str(IDLE)) as proc:
        assert stays_up(proc)
        policy.unlink()
        assert proc.wait(DEADLINE) == 0


def test_the_proxy_does_not_exit_while_a_launcher_holds_its_exit_lock(tmp_path: Path) -> None:
    lock = tmp_path / "logs" / IDLE_LOCK
    lock.parent.mkdir()
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with proxy(tmp_path, "--idle-exit", str(IDLE)) as proc:
            assert stays_up(proc), "a launcher attaching a run holds the lock: the proxy must wait"
            assert lock.read_bytes() == b""
            fcntl.flock(fd, fcntl.LOCK_UN)
            assert proc.wait(DEADLINE) == 0
    finally:
        os.close(fd)


def test_a_proxy_that_marked_its_exit_holds_the_lock_until_it_is_gone(tmp_path: Path) -> None:
    """What makes the launcher's check safe: once the mark is there, the lock is the proxy's
    until the process has ended, so a launcher that gets the lock sees the mark."""
    with proxy(tmp_path, "--idle-exit", str(IDLE)) as proc:
        assert proc.wait(DEADLINE) == 0
    fd = os.open(tmp_path / "logs" / IDLE_LOCK, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free now: the process is gone
    finally:
        os.close(fd)


# -- the launcher's side -------------------------------------------------------------------


class StandInContainer:
    def __init__(self, engine: StandInEngine, name: str, labels: dict[str, str]) -> None:
        self.engine, self.name, self.labels = engine, name, labels
        self.id = f"c{len(engine.made)}"
        self.status = "created"

    def start(self) -> None:
        self.status = "running"

    def logs(self, **_options: Any) -> bytes:
        return b"egress proxy listening on 0.0.0.0:3128\n"

    def reload(self) -> None:
        return None

    def remove(self, force: bool = False) -> None:
        self.engine.removed.append(self.id)
        self.engine.current = None


class StandInEngine:
    """Just enough of the Docker SDK for DockerEgress's proxy hand-over."""

    def __init__(self) -> None:
        self.made: list[StandInContainer] = []
        self.removed: list[str] = []
        self.current: StandInContainer | None = None
        self.connected: list[tuple[str, str]] = []
        self.commands: list[list[str]] = []
        self.containers, self.networks, self.api = self, self, self

    # containers
    def get(self, name: str) -> StandInContainer:
        from docker.errors import NotFound

        if self.current is None:
            raise NotFound("no such container")
        return self.current

    def create(self, *, name: str, labels: dict[str, str], command: list[str], **_options: Any) -> StandInContainer:
        self.commands.append(command)
        self.current = StandInContainer(self, name, labels)
        self.made.append(self.current)
        return self.current

    # networks
    def list(self, **_options: Any) -> list[Any]:
        return []

    # api
    def connect_container_to_network(self, container: str, network: str, ipv4_address: str) -> None:
        self.connected.append((container, network))


def test_a_launcher_replaces_a_proxy_that_marked_its_exit_and_clears_the_mark(tmp_path: Path) -> None:
    folder = install_egress_proxy(tmp_path / "state")
    logs = tmp_path / "logs"
    logs.mkdir()
    settings = ProxySettings(
        root=str(tmp_path),
        name="launcher-egress-test",
        image="launcher/egress-proxy:latest",
        egress_network="bridge",
        uid=os.getuid(),
        gid=os.getgid(),
        program_dir=str(folder),
        program_sha256=egress_proxy_sha256(folder),
        policies_dir=str(tmp_path / "policies"),
        logs_dir=str(logs),
        idle_exit=600,
    )
    engine = StandInEngine()
    egress = DockerEgress(settings, tmp_path / "engine.lock", lambda: engine)
    egress.attach_proxy("run-a", "10.213.0.2")
    first = engine.made[0]
    assert first.labels[labels.PROXY_CONFIG] == settings.fingerprint
    command = engine.commands[0]
    assert command[command.index("--idle-exit") + 1] == "600"

    egress.attach_proxy("run-b", "10.213.0.18")
    assert len(engine.made) == 1, "a running proxy with no mark is used as it is"

    # The proxy decided to exit (its last check saw no policy) and is still shutting down.
    (logs / IDLE_LOCK).write_bytes(EXITING)
    egress.attach_proxy("run-c", "10.213.0.34")
    assert engine.removed == [first.id]
    assert len(engine.made) == 2
    assert engine.current is engine.made[1]
    assert engine.connected[-1] == (engine.made[1].id, "run-c")
    assert (logs / IDLE_LOCK).read_bytes() == b"", "the new proxy starts unmarked"


def test_the_exit_lock_is_never_a_symlink_the_launcher_follows(tmp_path: Path) -> None:
    folder = install_egress_proxy(tmp_path / "state")
    logs = tmp_path / "logs"
    logs.mkdir()
    target = tmp_path / "elsewhere"
    target.write_bytes(b"not the proxy's")
    (logs / IDLE_LOCK).symlink_to(target)
    settings = ProxySettings(
        root=str(tmp_path),
        name="launcher-egress-test",
        image="launcher/egress-proxy:latest",
        egress_network="bridge",
        uid=os.getuid(),
        gid=os.getgid(),
        program_dir=str(folder),
        program_sha256=egress_proxy_sha256(folder),
        policies_dir=str(tmp_path / "policies"),
        logs_dir=str(logs),
    )
    engine = StandInEngine()
    DockerEgress(settings, tmp_path / "engine.lock", lambda: engine).attach_proxy("run-a", "10.213.0.2")
    assert target.read_bytes() == b"not the proxy's"
    assert not (logs / IDLE_LOCK).is_symlink()
    assert len(engine.made) == 1


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_a_bad_idle_exit_is_refused(tmp_path: Path, value: str) -> None:
    (tmp_path / "policies").mkdir()
    done = subprocess.run(
        [
            *proxy_command(tmp_path / "state"),
            "--policies",
            str(tmp_path / "policies"),
            "--logs",
            str(tmp_path),
            "--idle-exit",
            value,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env={},
    )
    assert done.returncode == 2
    assert "--idle-exit" in done.stderr

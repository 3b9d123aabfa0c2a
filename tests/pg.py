"""A throwaway PostgreSQL server for the tests: Debian's server binaries, a temp dir, a free port.

One server per test session (``pg_server``), one fresh database per test (``PgServer.database``).
The server listens on 127.0.0.1 only (plus a unix socket inside its temp dir), trusts local
connections, runs with ``fsync=off``, and is stopped (``pg_ctl stop -m immediate``) and its temp
dir removed when the session ends, whatever happened.

PostgreSQL refuses to run as root, and the tests do run as root here and in CI: the server then
runs as the ``postgres`` system user, or, where that does not exist, as a dedicated
``launcher-pg`` user this module creates.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BIN_GLOB = "/usr/lib/postgresql/*/bin"
SKIP_REASON = "this machine lacks PostgreSQL server binaries (/usr/lib/postgresql/*/bin); .ci/run installs them"
SUPERUSER = "launcher"
FALLBACK_OS_USER = "launcher-pg"
START_TIMEOUT_S = 60


def find_bin_dir() -> Path | None:
    """The newest installed server version's bin dir (one with initdb, pg_ctl and postgres)."""
    candidates = []
    for path in Path("/").glob(BIN_GLOB.lstrip("/")):
        version = path.parent.name
        if not re.fullmatch(r"\d+(\.\d+)?", version):
            continue
        if all((path / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            candidates.append((tuple(int(p) for p in version.split(".")), path))
    return max(candidates)[1] if candidates else None


def _os_user() -> pwd.struct_passwd | None:
    """Who runs the server: None for ourselves, unless we are root (postgres refuses root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_OS_USER):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_OS_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(FALLBACK_OS_USER)


def _temp_parent() -> str | None:
    """/dev/shm when it is a roomy tmpfs (creating a database there is ~10x faster), else $TMPDIR."""
    shm = "/dev/shm"
    try:
        stat = os.statvfs(shm)
    except OSError:
        return None
    roomy = stat.f_bavail * stat.f_frsize >= 1 << 30  # Docker's default 64 MiB /dev/shm is not
    return shm if roomy and os.access(shm, os.W_OK | os.X_OK) else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgServer:
    bin_dir: Path
    root: Path
    port: int = 0
    user: pwd.struct_passwd | None = None
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    @property
    def log_file(self) -> Path:
        return self.root / "server.log"

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = START_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", LANG="C")
        kwargs: dict[str, object] = {}
        if self.user is not None:
            kwargs = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}
            env.update(HOME=str(self.root), USER=self.user.pw_name, LOGNAME=self.user.pw_name)
        return subprocess.run(
            [str(self.bin_dir / args[0]), *args[1:]],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            **kwargs,
        )

    def start(self) -> None:
        self.user = _os_user()
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.root.chmod(0o700)
        self.socket_dir.mkdir(mode=0o700)
        if self.user is not None:
            os.chown(self.socket_dir, self.user.pw_uid, self.user.pw_gid)
        init = self._run(
            "initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync"
        )
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed ({init.returncode}):\n{init.stdout}\n{init.stderr}")
        last = ""
        for _ in range(3):  # the free port may be taken between probing and binding it
            self.port = _free_port()
            started = self._pg_ctl_start()
            if started.returncode == 0:
                return
            last = f"{started.stdout}\n{started.stderr}\n{self._log_tail()}"
        raise RuntimeError(f"pg_ctl start failed:\n{last}")

    def _pg_ctl_start(self) -> subprocess.CompletedProcess[str]:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        return self._run(
            "pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_file), "-w",
            "-t", str(START_TIMEOUT_S), "-o", options,
        )  # fmt: skip

    def _log_tail(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-3000:]
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server and remove its temp dir; never raises (it runs at session end)."""
        try:
            if (self.data_dir / "postmaster.pid").exists():
                stopped = self._run("pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate", "-w", timeout=30)
                if stopped.returncode != 0:
                    self._kill_postmaster()
        except (OSError, subprocess.SubprocessError):
            self._kill_postmaster()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def _kill_postmaster(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((self.data_dir / "postmaster.pid").read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        """A fresh, empty database for one test; dropped afterwards (connections and all)."""
        import psycopg

        name = f"t_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            # FILE_COPY (15+) copies the small template at once instead of WAL-logging it block
            # by block: ~50 ms a database instead of ~150-400 ms.
            strategy = " STRATEGY = FILE_COPY" if conn.info.server_version >= 150000 else ""
            conn.execute(f"CREATE DATABASE {name}{strategy}")
        try:
            yield self.url(name)
        finally:
            with psycopg.connect(self.url(), autocommit=True) as conn:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class Restartable:
    """Stop and start one PostgreSQL server again on the same port and data dir (outage tests)."""

    def __init__(self, server: PgServer) -> None:
        self.server = server

    def stop(self, mode: str = "fast") -> None:
        done = self.server._run("pg_ctl", "stop", "-D", str(self.server.data_dir), "-m", mode, "-w", timeout=60)
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        done = self.server._pg_ctl_start()
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"

    def up(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.server.url(), connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


@contextlib.contextmanager
def private_server(config: pytest.Config, prefix: str) -> Iterator[PgServer]:
    """A server of the caller's own (one a test may stop), not the session's shared one."""
    shared_server(config)  # skips (or fails on CI) where the binaries are missing, as everywhere
    bin_dir = find_bin_dir()
    assert bin_dir is not None
    server = PgServer(bin_dir=bin_dir, root=Path(tempfile.mkdtemp(prefix=prefix, dir=_temp_parent())))
    server.start()
    try:
        yield server
    finally:
        server.stop()


_server: PgServer | None = None
_failure: str | None = None


def shared_server(config: pytest.Config) -> PgServer:
    """Start the session's server once (whichever module asks first); stop it at session end."""
    global _server, _failure
    if _server is not None:
        return _server
    if _failure is not None:
        pytest.fail(_failure, pytrace=False)
    bin_dir = find_bin_dir()
    if bin_dir is None:
        if os.environ.get("CI"):
            # .ci/run installs the binaries: on CI a missing server is a broken setup, not a skip.
            _failure = f"CI is set but {SKIP_REASON}"
            pytest.fail(_failure, pytrace=False)
        pytest.skip(SKIP_REASON)
    server = PgServer(bin_dir=bin_dir, root=Path(tempfile.mkdtemp(prefix="launcher-pg-", dir=_temp_parent())))

    def stop() -> None:
        global _server
        _server = None
        server.stop()

    config.add_cleanup(stop)
    try:
        server.start()
    except Exception as exc:
        _failure = f"could not start the test PostgreSQL server: {exc}"
        pytest.fail(_failure, pytrace=False)
    _server = server
    return server


@pytest.fixture(scope="session")
def pg_server(request: pytest.FixtureRequest) -> PgServer:
    """The session's PostgreSQL server (import this fixture into a conftest or test module)."""
    return shared_server(request.config)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """The URL of a fresh database on the session's server."""
    with pg_server.database() as url:
        yield url

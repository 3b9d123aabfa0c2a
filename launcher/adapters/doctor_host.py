"""`launcher doctor`'s view of this machine (launcher.core.doctor.ports.DoctorHost).

Everything here only looks, except where a check must try: a file written and removed in the
case root, and a proxy container started and removed (launcher.adapters.docker.doctor_probes).
The state store is read without creating or migrating anything.
"""

from __future__ import annotations

import os
import secrets
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path
from typing import Any

from launcher.adapters import disk
from launcher.core.doctor.ports import EngineFacts, ImageFacts, StoreFacts
from launcher.core.ports.sandbox import Sandbox
from launcher.errors import GitError, InvalidInputError, StateStoreError
from launcher.settings import NetworkSettings, RunDefaults

GIT_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 10
# Test only, as for the real proxy (launcher/cli/app_context.py): ranges that count as public.
PUBLIC_CIDRS_ENV = "LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS"


class HostDoctor:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client
        self._client_lock = threading.Lock()

    # -- the engine ------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                from launcher.adapters.docker.client import docker_client

                self._client = docker_client()
            return self._client

    def engine(self) -> EngineFacts:
        from launcher.adapters.docker.doctor_probes import engine_facts

        return engine_facts(self.client)

    def image(self, ref: str) -> ImageFacts:
        from launcher.adapters.docker.doctor_probes import image_facts

        return image_facts(self.client, ref)

    def sandbox(self) -> Sandbox:
        from launcher.adapters.docker.sandbox import DockerSandbox

        return DockerSandbox(self.client)

    def try_proxy(self, root: Path, state_dir: Path, network: NetworkSettings, run: RunDefaults) -> str:
        from launcher.adapters.docker.doctor_probes import try_proxy

        return try_proxy(self.client, root, state_dir, network, run)

    # -- the host --------------------------------------------------------------------------

    def git_version(self) -> str:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
        try:
            proc = subprocess.run(
                ["git", "--version"], cwd="/", env=env, capture_output=True, text=True, timeout=GIT_TIMEOUT_S
            )
        except FileNotFoundError as exc:
            raise GitError("no git on this machine's PATH", hint="install git (2.40 or later)") from exc
        except subprocess.TimeoutExpired as exc:
            raise GitError(f"`git --version` did not answer within {GIT_TIMEOUT_S:g} s") from exc
        if proc.returncode != 0:
            said = (proc.stderr or proc.stdout).strip()[:300]
            raise GitError(f"`git --version` failed ({proc.returncode}): {said}", hint="reinstall git")
        return proc.stdout.strip()

    def resolve(self, host: str) -> list[str]:
        found = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        return list(dict.fromkeys(str(info[4][0]) for info in found))

    def host_addresses(self, private_allowed: list[str]) -> list[str]:
        from launcher.adapters.docker.egress import host_addresses

        return host_addresses(private_allowed)

    def public_cidrs(self) -> list[str]:
        return [c for c in os.environ.get(PUBLIC_CIDRS_ENV, "").split(",") if c]

    def free_space(self, path: Path) -> int:
        return disk.free_bytes(path)

    def disk_size(self, path: Path) -> int:
        return disk.size_bytes(path)

    def probe_write(self, folder: Path) -> None:
        path = folder / f".launcher-doctor-{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, b"launcher doctor\n")
            os.fsync(fd)
        finally:
            os.close(fd)
            path.unlink()

    # -- the coordinator -------------------------------------------------------------------

    def store(self, url: str) -> StoreFacts:
        from launcher.adapters.store.sql.schema import SCHEMA_VERSION

        if url.startswith("sqlite:///"):
            return _sqlite_facts(Path(url.removeprefix("sqlite:///")), SCHEMA_VERSION)
        if url.startswith(("postgresql://", "postgres://")):
            return _postgres_facts(url, SCHEMA_VERSION)
        raise InvalidInputError(
            f"unsupported state URL {url!r}", hint="use sqlite:///ABSOLUTE/PATH or postgresql://..."
        )

    def open_store(self, url: str) -> None:
        from launcher.adapters.store import open_coordinator

        open_coordinator(url, create=False).close()


def _sqlite_facts(path: Path, known: int) -> StoreFacts:
    if not path.exists():
        return StoreFacts(where=str(path), exists=False, schema_version=None, known_version=known)
    try:
        # mode=ro: a look never creates the file, its journal, or a table.
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5.0)
        try:
            has_table = db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            row = db.execute("SELECT version FROM schema_version").fetchone() if has_table else None
        finally:
            db.close()
    except sqlite3.Error as exc:
        raise StateStoreError(
            f"cannot read the state store {path}: {exc}",
            hint="check that the case root is readable and writable (a WAL store needs its folder writable), "
            "and that the file is launcher's",
        ) from exc
    version = int(row[0]) if row else None
    return StoreFacts(where=str(path), exists=True, schema_version=version, known_version=known)


def _postgres_facts(url: str, known: int) -> StoreFacts:
    import psycopg

    from launcher.adapters.store.postgres import redact_url

    where = redact_url(url)
    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, autocommit=True) as conn:
            present = conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            row = conn.execute("SELECT version FROM schema_version").fetchone() if present and present[0] else None
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StateStoreError(
            f"cannot connect to the PostgreSQL state store {where}: {first}",
            hint="check the state URL (host, port, database, user, password) and that the PostgreSQL server "
            "is running and reachable from here",
        ) from exc
    version = int(row[0]) if row else None
    return StoreFacts(where=where, exists=True, schema_version=version, known_version=known)

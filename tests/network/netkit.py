"""Machinery of the egress tests (fixtures re-exported by conftest.py): a small internet of our own.

``internet``: a Docker network of the tests' own, standing in for the internet, with three
upstream servers on it: ``allowed.test`` and ``denied.test`` (HTTP on 80) and ``api.test``
(HTTPS on 443, with a certificate from a throwaway CA). Each upstream appends what it received
to a JSON-lines file the test reads. Everything carries ``launcher.test=egress-suite`` plus a
per-session token and is removed at the end.

``host_listener``: a TCP listener on every address of this machine, which no run may reach.

``egress_case``: a case root whose proxy reaches the internet through that network, trusts the
throwaway CA, and (test-only setting) treats the network's private subnet as public.
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from helpers import docker_client, wait_for
from runkit import Case, agent_image, case, launcher_roots, make_repo

__all__ = ["agent_image", "case", "launcher_roots"]

HERE = Path(__file__).resolve().parent
TEST_LABEL = "launcher.test"
UPSTREAMS = {"allowed.test": 80, "denied.test": 80, "api.test": 443}


@dataclass
class Internet:
    network: str
    subnet: str
    ips: dict[str, str]
    record_dir: Path
    ca_file: Path
    gateway: str

    def received(self, name: str) -> list[dict[str, Any]]:
        path = self.record_dir / f"{name}.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


def make_certificates(folder: Path) -> None:
    """A throwaway CA and a certificate for api.test signed by it."""
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=launcher test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=api.test", "-keyout", "api.key",
             "-out", "api.csr", cwd=folder)  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=DNS:api.test\n")
    _openssl("x509", "-req", "-in", "api.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "api.pem", cwd=folder)  # fmt: skip
    for name in ("ca.pem", "api.pem", "api.key"):
        (folder / name).chmod(0o644)


@pytest.fixture(scope="session")
def internet(agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Internet]:
    token = secrets.token_hex(4)
    labels = {TEST_LABEL: "egress-suite", "launcher.test-token": token}
    top = Path(tmp_path_factory.mktemp("internet"))
    top.chmod(0o755)
    certs, record = top / "certs", top / "record"
    certs.mkdir()
    record.mkdir()
    record.chmod(0o777)
    make_certificates(certs)
    client = docker_client()
    network = client.networks.create(f"launcher-test-inet-{token}", driver="bridge", labels=labels)
    containers = []
    try:
        from docker.types import Mount

        for name, port in UPSTREAMS.items():
            command = ["python3", "/srv/upstream.py", name, str(port), f"/record/{name}.jsonl"]
            if port == 443:
                command += ["--tls", "/certs/api.pem", "/certs/api.key"]
            container = client.containers.create(
                agent_image,
                command=command,
                name=f"launcher-test-{name.split('.')[0]}-{token}",
                labels=labels,
                user="1000:1000",
                mounts=[
                    Mount("/srv", str(HERE), type="bind", read_only=True),
                    Mount("/certs", str(certs), type="bind", read_only=True),
                    Mount("/record", str(record), type="bind"),
                ],
                sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
                network=network.name,
                detach=True,
            )
            containers.append(container)
            # The name the proxy resolves through the engine's DNS on this network.
            network.disconnect(container)
            network.connect(container, aliases=[name])
            container.start()
        for container in containers:
            wait_for(lambda c=container: b"listening" in c.logs(), timeout=60, what=f"{container.name} to listen")
        network.reload()
        ips = {}
        for container in containers:
            container.reload()
            ip = container.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
            ips[next(n for n in UPSTREAMS if container.name.startswith(f"launcher-test-{n.split('.')[0]}-"))] = ip
        ipam = network.attrs["IPAM"]["Config"][0]
        yield Internet(
            network=network.name,
            subnet=ipam["Subnet"],
            ips=ips,
            record_dir=record,
            ca_file=certs / "ca.pem",
            gateway=ipam.get("Gateway", ""),
        )
    finally:
        for container in containers:
            container.remove(force=True)
        network.reload()
        for member in network.attrs.get("Containers") or {}:
            network.disconnect(member, force=True)  # a proxy a failed test left connected
        network.remove()
        client.close()


@dataclass
class HostListener:
    port: int
    connections: list[str] = field(default_factory=list)


@pytest.fixture
def host_listener() -> Iterator[HostListener]:
    """Listens on all of this machine's addresses; records every peer that connects."""
    server = socket.create_server(("0.0.0.0", 0))
    listener = HostListener(port=server.getsockname()[1])
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            listener.connections.append(f"{peer[0]}:{peer[1]}")
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def host_addresses() -> list[str]:
    """This machine's IPv4 addresses as the runs would dial them (docker0's among them)."""
    out = subprocess.run(["hostname", "-I"], capture_output=True, text=True, check=True).stdout.split()
    return [a for a in out if ":" not in a]


@dataclass
class EgressCase:
    case: Case
    internet: Internet
    repo: Path
    env: dict[str, str]

    def run(self, task: str, *options: str, env: dict[str, str] | None = None) -> Any:
        return self.case.cli("run", "--json", task, *options, env={**self.env, **(env or {})}, timeout=300)


@pytest.fixture
def egress_case(case: Case, internet: Internet, tmp_path: Path) -> EgressCase:
    (case.root / "launcher.toml").write_text(
        f'[network]\negress_network = "{internet.network}"\nca_file = "{internet.ca_file}"\n'
    )
    repo = make_repo(tmp_path / "repo")
    (repo / "probe.py").write_bytes((HERE / "probe.py").read_bytes())
    subprocess.run(["git", "add", "probe.py"], cwd=repo, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "probe"], cwd=repo, check=True)
    return EgressCase(
        case=case, internet=internet, repo=repo, env={"LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS": internet.subnet}
    )


def facts_of(log: str) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for line in log.splitlines():
        if line.startswith("FACT "):
            name, _, value = line[5:].partition("=")
            found[name] = json.loads(value)
    return found

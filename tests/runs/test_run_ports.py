"""Host ports for runs (--port): leased, published on 127.0.0.1 only, each run's own, released.

Eight runs at once each serve HTTP on $PORT and on a second leased name; the host reaches every
one on 127.0.0.1 (and on none of its other addresses), each answering with its own run ID. Half
are stopped (settle releases their ports), the other half lose their launcher to SIGKILL and
`gc` releases theirs. What an agent can reach through its own port relay is measured too.
"""

from __future__ import annotations

import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import docker_client, wait_for
from runkit import Case, facts, make_repo

from launcher.adapters.store.sqlite import SqliteCoordinator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

RUNS = 8
# A range of the tests' own, so other suites' runs on this engine do not meet these leases.
PORT_RANGE = "29100-29199"

SERVER = r"""
import http.server, os, threading
run_id = os.environ["CASE_RUN_ID"].encode()
class Answer(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = run_id + b" " + self.server.tag
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
servers = []
for var in ("PORT", "PORT_API"):
    server = http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ[var])), Answer)
    server.tag = var.encode()
    servers.append(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("FACT serving=" + os.environ["PORT"] + "," + os.environ["PORT_API"], flush=True)
threading.Event().wait()
"""


def write_config(root: Path) -> None:
    (root / "launcher.toml").write_text(f'[network]\nport_range = "{PORT_RANGE}"\n')


def get(port: int, host: str = "127.0.0.1") -> bytes:
    with socket.create_connection((host, port), timeout=5) as conn:
        conn.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def answers(port: int) -> bytes | None:
    try:
        return get(port)
    except OSError:
        return None


def refused(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=3):
            return False
    except OSError:
        return True


def host_addresses() -> list[str]:
    """This host's IPv4 addresses other than loopback (the docker bridge's gateway among them)."""
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True, check=False).stdout
    found = [line.split()[3].split("/")[0] for line in out.splitlines() if len(line.split()) > 3]
    return [a for a in found if not a.startswith("127.")]


def leases_of(root: Path) -> dict[int, tuple[str, str]]:
    with SqliteCoordinator(root / ".launcher" / "state.db") as store:
        return store.port_leases()


def live_ports(case: Case) -> dict[str, dict[str, str]]:
    return {r["id"]: r["ports"] for r in case.runs(live_only=True) if r["ports"]}


def test_eight_runs_get_sixteen_loopback_ports_each_answering_as_its_own_run(case: Case, tmp_path: Path) -> None:
    write_config(case.root)
    repo = make_repo(tmp_path / "repo")
    tasks = [case.create_task(repo, f"server {n}") for n in range(RUNS)]
    procs = [
        case.popen("run", task, "--port", "web", "--port", "api=9000", "--", "python3", "-c", SERVER) for task in tasks
    ]

    def all_published() -> dict[str, dict[str, str]] | None:
        found = live_ports(case)
        return found if len(found) == RUNS else None

    ports = wait_for(
        all_published,
        timeout=240,
        what=f"{RUNS} runs with their ports",
    )
    urls = [url for named in ports.values() for url in named.values()]
    numbers = {int(url.rsplit(":", 1)[1]) for url in urls}
    assert len(urls) == 2 * RUNS
    assert len(numbers) == 2 * RUNS, f"a host port was leased twice: {sorted(urls)}"
    assert all(url.startswith("http://127.0.0.1:") for url in urls), urls
    assert {n for n in numbers if not 29100 <= n <= 29199} == set()
    for run_id, named in ports.items():
        assert set(named) == {"web", "api"}
        for name, tag in (("web", b"PORT"), ("api", b"PORT_API")):
            port = int(named[name].rsplit(":", 1)[1])
            body = wait_for(lambda p=port: answers(p), timeout=60, what=f"{run_id}'s {name} server")  # type: ignore[misc]
            assert body == run_id.encode() + b" " + tag, (run_id, name, body)
            for address in host_addresses():
                assert refused(address, port), f"{run_id}'s port {port} answers on {address}"
    # The engine publishes on 127.0.0.1 only.
    client = docker_client()
    try:
        bindings = [
            binding
            for c in case.containers()
            for bound in (c.attrs["NetworkSettings"]["Ports"] or {}).values()
            for binding in bound or []
        ]
    finally:
        client.close()
    assert len(bindings) == 2 * RUNS
    assert {b["HostIp"] for b in bindings} == {"127.0.0.1"}, bindings
    assert len(leases_of(case.root)) == 2 * RUNS

    # Half are stopped: settle releases their ports. The others lose their launcher to SIGKILL.
    by_run = {case.run_of(task): (task, proc) for task, proc in zip(tasks, procs, strict=True)}
    stopped = sorted(by_run)[: RUNS // 2]
    killed = sorted(by_run)[RUNS // 2 :]
    for run_id in stopped:
        case.ok("stop", run_id, "--grace", "0")
        by_run[run_id][1].wait(timeout=120)
    held = {run_id for run_id, _name in leases_of(case.root).values()}
    assert held == set(killed)
    for run_id in killed:
        by_run[run_id][1].send_signal(signal.SIGKILL)
        by_run[run_id][1].wait(timeout=30)
    assert {run_id for run_id, _name in leases_of(case.root).values()} == set(killed), "SIGKILL released nothing"
    report = case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    # gc settles each orphaned run, which removes its relay and releases its ports (a lease left
    # without a live run would be a `release-port` action of its own).
    settled = {a["target"] for a in report["actions"] if a["kind"] == "settle-run"}
    assert settled == set(killed), report
    assert leases_of(case.root) == {}
    assert not case.containers()
    for port in numbers:
        assert answers(port) is None, f"port {port} still answers after every run ended"
    assert case.json("gc")["actions"] == []


PROBE = r"""
import os, socket
def attempt(name, host, port, send=b""):
    try:
        with socket.create_connection((host, port), timeout=3) as conn:
            conn.sendall(send)
            conn.settimeout(3)
            data = conn.recv(100)
            print(f"FACT {name}=" + ("open:" + data.decode(errors="replace")[:20] if data else "closed"), flush=True)
    except OSError as exc:
        print(f"FACT {name}=error:{type(exc).__name__}", flush=True)
net = os.environ["PROBE_NET"]
relay = net + ".4"
attempt("relay", relay, 10000, b"GET / HTTP/1.0\r\n\r\n")
attempt("internet", "1.1.1.1", 80)
attempt("bridge_gateway", "172.17.0.1", 22)
attempt("gateway", net + ".1", 80)
"""


def test_an_agent_reaches_nothing_through_its_port_relay_and_no_host_address(case: Case, tmp_path: Path) -> None:
    write_config(case.root)
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "probe")
    # The run's /28 is the first of the pool on a fresh root: 10.213.0.0/28 unless another root holds it,
    # so the agent reads it from its own address instead.
    script = (
        "import socket, os\n"
        "ip = socket.gethostbyname(socket.gethostname())\n"
        "os.environ['PROBE_NET'] = ip.rsplit('.', 1)[0]\n" + PROBE
    )
    result = case.cli("run", task, "--port", "web", "--", "python3", "-c", script, timeout=240)
    assert result.exit_code == 0, result.stderr
    seen: dict[str, Any] = facts(case.ok("logs", case.run_of(task)).stdout)
    # The relay takes connections from the publishing network's gateway only: the agent's is closed at once.
    assert seen["relay"] in ("closed", "error:ConnectionResetError"), seen
    assert seen["internet"].startswith("error:"), seen
    assert seen["bridge_gateway"].startswith("error:"), seen
    assert seen["gateway"].startswith("error:"), seen
    assert leases_of(case.root) == {}


def test_a_batch_gives_every_run_its_own_ports(case: Case, tmp_path: Path) -> None:
    write_config(case.root)
    repo = make_repo(tmp_path / "repo")
    probe = 'echo "FACT web=$PORT_WEB"; echo "FACT port=$PORT"'
    tasks = [case.create_task(repo, f"Batch port {i}", "--", "sh", "-c", probe) for i in range(3)]
    case.ok("queue", *tasks)

    result = case.cli("batch", "-j", "3", "--port", "web", "--json")

    assert result.exit_code == 0, result.stdout + result.stderr
    runs = [r for r in case.runs() if r["task_id"] in tasks]
    assert len(runs) == 3
    leased = []
    for run in runs:
        [port] = run["details"]["ports"]
        assert port["name"] == "web"
        assert port["url"] == f"http://127.0.0.1:{port['host_port']}"
        told = facts(case.ok("logs", run["id"]).stdout)
        assert told["web"] == told["port"] == str(port["host_port"])
        leased.append(port["host_port"])
    assert len(set(leased)) == 3
    assert leases_of(case.root) == {}

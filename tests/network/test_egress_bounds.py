"""What a run's network can cost the host: its record stays small, the proxy does not outlive runs.

Real Docker, the real proxy, the suite's stand-in internet (netkit.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import containers_of, docker_client, wait_for
from netkit import EgressCase, facts_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REFUSED = 5000
# The agent: REFUSED CONNECTs through the proxy, each to a name of its own that no rule allows.
FLOOD = r"""
import concurrent.futures, os, socket, urllib.parse
proxy = urllib.parse.urlsplit(os.environ["HTTPS_PROXY"])
def one(i):
    target = f"n{i}.flood.example:443"
    with socket.create_connection((proxy.hostname, proxy.port), 30) as s:
        s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return s.recv(64).split(b" ")[1].decode()
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    codes = list(pool.map(one, range(COUNT)))
print("FACT refused=" + str(codes.count("403")))
""".replace("COUNT", str(REFUSED))
CURL = "curl -s -o /dev/null -w 'FACT code=\"%{http_code}\"\\n' http://allowed.test/"


def proxies(root: Path) -> list[Any]:
    return [c for c in containers_of(root, include_proxy=True) if c.labels.get("launcher.kind") == "egress-proxy"]


def test_a_run_refused_thousands_of_names_keeps_a_small_record_and_the_whole_log(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "flood the proxy")
    result = ec.run(task, "--allow", "allowed.test", "--", "python3", "-c", FLOOD)
    assert result.exit_code == 0, result
    run_id = json.loads(result.stdout)["id"]
    assert facts_of(ec.case.ok("logs", run_id).stdout)["refused"] == REFUSED

    # The record: counts and the most frequent hosts, never one entry per name.
    listed = ec.case.ok("ps", "--all", "--json").stdout
    assert len(listed.encode()) < 32 * 1024, f"`ps --all --json` is {len(listed)} bytes for one run"
    (record,) = json.loads(listed)
    egress = record["egress"]
    assert egress["decisions"] == REFUSED
    assert egress["denied_decisions"] == REFUSED
    assert egress["denied_hosts"] == REFUSED
    assert egress["allowed_decisions"] == 0
    assert 0 < len(egress["denied"]) <= 20
    assert all(host.endswith(".flood.example:443") for host in egress["denied"])
    assert egress["hosts_capped"] is False

    # The decision log keeps every decision, one line each.
    lines = ec.case.ok("logs", run_id, "--egress").stdout.splitlines()
    assert len(lines) == REFUSED
    names = {json.loads(line)["host"] for line in lines}
    assert names == {f"n{i}.flood.example" for i in range(REFUSED)}
    assert Path(egress["log"]).is_file()


def test_the_text_report_names_a_few_hosts_and_counts_the_rest(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "a few refusals")
    command = "for i in 1 2 3 4 5 6 7; do curl -s -o /dev/null http://n$i.denied.test/; done; " + CURL
    result = ec.case.cli("run", task, "--allow", "allowed.test", "--", "sh", "-c", command, env=ec.env)
    assert result.exit_code == 0, result
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("launcher: network: ")]
    assert line.startswith("launcher: network: reached allowed.test:80; refused "), line
    assert "and 2 more (launcher logs --egress " in line, line


def test_an_idle_proxy_exits_by_itself_and_the_next_run_gets_a_new_one(egress_case: EgressCase) -> None:
    ec = egress_case
    config = ec.case.root / "launcher.toml"
    config.write_text(config.read_text() + "proxy_idle = 2\n")
    first = ec.case.create_task(ec.repo, "before the proxy idles")
    result = ec.run(first, "--allow", "allowed.test", "--", "sh", "-c", CURL)
    assert result.exit_code == 0, result
    assert facts_of(ec.case.ok("logs", json.loads(result.stdout)["id"]).stdout)["code"] == "200"
    (proxy,) = proxies(ec.case.root)

    def exited() -> bool:
        proxy.reload()
        return bool(proxy.status == "exited")

    wait_for(exited, timeout=60, what="the idle proxy to exit by itself")
    state = proxy.attrs["State"]
    assert state["ExitCode"] == 0, state
    assert proxy.attrs["RestartCount"] == 0, "an idle exit is not a failure to restart"

    second = ec.case.create_task(ec.repo, "after the proxy idled")
    result = ec.run(second, "--allow", "allowed.test", "--", "sh", "-c", CURL)
    assert result.exit_code == 0, result
    assert facts_of(ec.case.ok("logs", json.loads(result.stdout)["id"]).stdout)["code"] == "200"
    (replacement,) = proxies(ec.case.root)
    assert replacement.id != proxy.id

    ec.case.ok("gc")
    assert not containers_of(ec.case.root, include_proxy=True), "gc still removes the proxy"


def test_a_run_starting_while_the_proxy_exits_gets_a_running_proxy(egress_case: EgressCase) -> None:
    ec = egress_case
    first = ec.case.create_task(ec.repo, "starts the proxy")
    assert ec.run(first, "--allow", "allowed.test", "--", "true").exit_code == 0
    (proxy,) = proxies(ec.case.root)
    assert proxy.status == "running"
    # What a proxy leaves once it has decided to exit (launcher/egress/idle.py): it is still
    # "running" for the engine, but about to go. A run must not be attached to it.
    (ec.case.root / ".launcher" / "egress" / "logs" / ".idle.lock").write_bytes(b"exiting\n")
    second = ec.case.create_task(ec.repo, "while it exits")
    result = ec.run(second, "--allow", "allowed.test", "--", "sh", "-c", CURL)
    assert result.exit_code == 0, result
    assert facts_of(ec.case.ok("logs", json.loads(result.stdout)["id"]).stdout)["code"] == "200"
    (replacement,) = proxies(ec.case.root)
    assert replacement.id != proxy.id
    client = docker_client()
    try:
        assert not [c for c in client.containers.list(all=True) if c.id == proxy.id], "the exiting one is removed"
    finally:
        client.close()

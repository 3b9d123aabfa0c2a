"""Egress per run, end to end: real Docker, the real proxy, a stand-in internet of our own.

Each run's agent (tests/network/probe.py) tries every way out it can think of and reports;
the upstreams record what actually reached them, and the proxy's decision log says why.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import containers_of, networks_of, wait_for
from netkit import EgressCase, HostListener, Internet, facts_of, host_addresses

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TEST_KEY = "sk-launcher-test-" + "5f0c2a9d7e41b836"


def probe_command(**args: object) -> list[str]:
    return ["--", "python3", "probe.py", json.dumps(args)]


def run_log(ec: EgressCase, run_id: str, *extra: str) -> str:
    return str(ec.case.ok("logs", run_id, *extra).stdout)


def test_an_allowlist_run_reaches_only_its_hosts_and_never_sees_its_key(
    egress_case: EgressCase, host_listener: HostListener
) -> None:
    ec, inet = egress_case, egress_case.internet
    task = ec.case.create_task(ec.repo, "probe the way out")
    args = {"allowed_ip": inet.ips["allowed.test"], "host_port": host_listener.port, "host_addrs": host_addresses()}
    result = ec.run(
        task,
        "--allow",
        "allowed.test",
        "--api-key",
        "ANTHROPIC_API_KEY=https://api.test",
        *probe_command(**args),
        env={"ANTHROPIC_API_KEY": TEST_KEY},
    )
    assert result.exit_code == 0, result
    record = json.loads(result.stdout)
    log = run_log(ec, record["id"])
    facts = facts_of(log)

    # Through the proxy: the allowed host answers, plain HTTP and CONNECT alike; others get 403.
    assert facts["http_allowed"]["code"] == "200", facts["http_allowed"]
    assert facts["connect_allowed"]["code"] == "200", facts["connect_allowed"]
    assert facts["http_denied"]["code"] == "403", facts["http_denied"]
    assert "403" in facts["connect_denied"]["err"] or facts["connect_denied"]["code"] == "403", facts
    assert facts["ip_literal"]["code"] == "403", facts["ip_literal"]
    assert facts["connect_metadata"]["code"] == "403" or "403" in facts["connect_metadata"]["err"], facts
    assert not [e for e in inet.received("denied.test")], "denied.test was reached"

    # Around the proxy: nothing. No DNS (fast), no route to the upstream, the host or its bridge.
    assert facts["no_proxy"]["rc"] != 0, facts["no_proxy"]
    assert facts["no_proxy"]["code"] in ("", "000"), facts["no_proxy"]
    assert facts["raw_tcp_server"]["connected"] is False, facts["raw_tcp_server"]
    assert facts["dns"]["resolved"] is False, facts["dns"]
    assert facts["dns"]["seconds"] < 1.0, facts["dns"]
    host_probes = {k: v for k, v in facts.items() if k.startswith("host_")}
    assert "host_via_gateway" in host_probes, host_probes
    assert len(host_probes) >= 2, host_probes
    assert all(v["connected"] is False for v in host_probes.values()), host_probes
    assert host_listener.connections == [], "a run reached a service on the host"
    assert not [a for a in facts["ipv6"] if a["scope"] == "00"], f"a global IPv6 address: {facts['ipv6']}"
    assert facts["git_denied"]["rc"] != 0, facts["git_denied"]
    assert "403" in facts["git_denied"]["err"], facts["git_denied"]

    # The key: injected by the proxy upstream, a placeholder inside, the client's header dropped.
    assert facts["key_env"]["value"] != TEST_KEY, facts["key_env"]
    assert facts["key_env"]["value"], facts["key_env"]
    assert facts["api"]["code"] == "200", facts["api"]
    assert facts["key_hits"] == [], f"the key is inside the container: {facts['key_hits']}"
    (api_request,) = inet.received("api.test")
    headers = {k.lower(): v for k, v in api_request["headers"]}
    assert headers.get("x-api-key") == TEST_KEY
    assert "authorization" not in headers, "a client-sent auth header reached the upstream"
    assert api_request["request_line"].startswith("POST /v1/messages?beta=true ")
    assert TEST_KEY not in log
    assert TEST_KEY not in result.stdout + result.stderr

    # What the run tried to reach: one decision per request, summarised on the record.
    egress = record["egress"]
    assert "allowed.test:80" in egress["allowed"], egress
    assert "denied.test:80" in egress["denied"], egress
    decisions = [json.loads(line) for line in run_log(ec, record["id"], "--egress").splitlines()]
    assert decisions
    assert all(d["run_id"] == record["id"] for d in decisions)
    literal = [d for d in decisions if d["host"] in (inet.ips["allowed.test"], "169.254.169.254")]
    assert literal, literal
    assert all(d["decision"] == "deny" and d["address"] is None for d in literal), literal
    assert TEST_KEY not in json.dumps(decisions)

    # Gone after the run: its network, its policy; the proxy stays for the next run until gc.
    assert not networks_of(ec.case.root)
    assert not list((ec.case.root / ".launcher" / "egress" / "policies").glob("*.json"))
    assert containers_of(ec.case.root, include_proxy=True), "the proxy outlives a run"
    ec.case.ok("gc")
    assert not containers_of(ec.case.root, include_proxy=True), "gc removes an idle proxy"


def test_a_private_address_is_refused_without_the_test_setting(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "private")
    command = ["--", "sh", "-c", "curl -sS -o /dev/null -w 'FACT code=\"%{http_code}\"' http://allowed.test/; echo"]
    result = ec.run(task, "--allow", "allowed.test", *command, env={"LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS": ""})
    assert result.exit_code == 0, result
    record = json.loads(result.stdout)
    assert facts_of(run_log(ec, record["id"]))["code"] == "403"
    (decision,) = [json.loads(line) for line in run_log(ec, record["id"], "--egress").splitlines()]
    assert decision["decision"] == "deny", decision
    assert decision["host"] == "allowed.test", decision
    assert "public" in decision["reason"] or "private" in decision["reason"], decision


def test_run_b_cannot_reach_run_a(egress_case: EgressCase, host_listener: HostListener) -> None:
    ec = egress_case
    server_task = ec.case.create_task(ec.repo, "serve")
    ec.case.ok(
        "run", "--detach", server_task, "--timeout", "120", "--", "python3", "-m", "http.server", "8000",
        env=ec.env,
    )  # fmt: skip
    run_a = ec.case.wait_running(server_task)
    (container_a,) = wait_for(
        lambda: [c for c in containers_of(ec.case.root) if c.labels.get("launcher.run-id") == run_a],
        timeout=60,
        what="run A's container",
    )
    container_a.reload()
    (ip_a,) = [n["IPAddress"] for n in container_a.attrs["NetworkSettings"]["Networks"].values()]
    try:
        task = ec.case.create_task(ec.repo, "neighbour")
        args = {"allowed_ip": ec.internet.ips["allowed.test"], "host_port": host_listener.port, "host_addrs": []}
        result = ec.run(task, "--allow", "allowed.test", *probe_command(**args, peer_ip=ip_a))
        assert result.exit_code == 0, result
        facts = facts_of(run_log(ec, json.loads(result.stdout)["id"]))
        assert facts["peer_direct"]["connected"] is False, facts["peer_direct"]
        assert facts["peer_via_proxy"]["code"] == "403", facts["peer_via_proxy"]
        # Two live runs, two networks of their own, never the same subnet.
        assert facts["own_addresses"]
        assert facts["own_addresses"][0] != ip_a
    finally:
        ec.case.ok("stop", run_a)
    wait_for(lambda: not networks_of(ec.case.root), timeout=60, what="run A's network to go")


def test_network_none_leaves_only_loopback(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "offline")
    result = ec.run(task, "--network", "none", *probe_command(none_only=True))
    assert result.exit_code == 0, result
    record = json.loads(result.stdout)
    facts = facts_of(run_log(ec, record["id"]))
    assert facts["interfaces"] == ["lo"], facts
    assert record["egress"] is None
    assert not containers_of(ec.case.root, include_proxy=True), "a run without network needs no proxy"


def test_open_mode_reaches_any_public_host_but_not_addresses(egress_case: EgressCase) -> None:
    ec, inet = egress_case, egress_case.internet
    task = ec.case.create_task(ec.repo, "open")
    command = [
        "--", "sh", "-c",
        "for u in http://allowed.test/ http://denied.test/ http://{}/; do "
        "printf 'FACT %s=\"%s\"\\n' \"$u\" \"$(curl -s -o /dev/null -w '%{{http_code}}' \"$u\")\"; done".format(
            inet.ips["allowed.test"]
        ),
    ]  # fmt: skip
    result = ec.run(task, "--network", "open", *command)
    assert result.exit_code == 0, result
    facts = facts_of(run_log(ec, json.loads(result.stdout)["id"]))
    assert facts["http://allowed.test/"] == "200"
    assert facts["http://denied.test/"] == "200"
    assert facts[f"http://{inet.ips['allowed.test']}/"] == "403"


def test_bad_network_options_are_refused_before_anything_is_created(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "bad options")
    cases = [
        (["--allow", "10.0.0.1"], "IP addresses are refused"),
        (["--allow", "exa mple.com"], "not a host name"),
        (["--allow", "example.com:99999"], "port"),
        (["--allow", "x.com:443:1"], "the port must be one number from 1 to 65535"),
        (["--preset", "nope"], "no such preset"),
        (["--network", "wide"], "choose none, allowlist or open"),
        (["--network", "none", "--allow", "example.com"], "no effect"),
        (["--api-key", "ANTHROPIC_API_KEY=http://api.test"], "https"),
        (["--api-key", "NOT_SET_ANYWHERE_KEY=https://api.test"], "no such variable"),
    ]
    for options, message in cases:
        result = ec.run(task, *options, "--", "true")
        assert result.exit_code == 6, (options, result)
        assert message in result.stderr, (options, result.stderr)
    assert ec.case.runs() == []
    assert not networks_of(ec.case.root)
    assert not containers_of(ec.case.root, include_proxy=True)


def test_a_killed_launcher_leaves_a_network_that_gc_removes(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "kill -9")
    proc = ec.case.popen(
        "run", task, "--allow", "allowed.test", "--", "sleep", "300", stdout=subprocess.DEVNULL, env=ec.env
    )
    ec.case.wait_running(task)
    assert networks_of(ec.case.root), "the running run has its network"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    report = ec.case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    kinds = {a["kind"] for a in report["actions"]}
    assert {"settle-run", "remove-egress-proxy"} <= kinds, report
    assert not networks_of(ec.case.root)
    assert not containers_of(ec.case.root, include_proxy=True)
    assert ec.case.json("gc")["actions"] == []


def test_the_proxy_runs_unprivileged_with_nothing_to_spare(egress_case: EgressCase) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "inspect the proxy")
    proc = ec.case.popen("run", task, "--", "sleep", "300", env=ec.env)
    run_id = ec.case.wait_running(task)
    try:
        (proxy,) = [
            c for c in containers_of(ec.case.root, include_proxy=True) if c.labels["launcher.kind"] == "egress-proxy"
        ]
        host = proxy.attrs["HostConfig"]
        assert proxy.attrs["Config"]["User"] not in ("", "0", "root", "0:0")
        assert host["CapDrop"] == ["ALL"]
        assert host["ReadonlyRootfs"] is True
        assert "no-new-privileges" in host["SecurityOpt"]
        status = proxy.exec_run(["cat", "/proc/1/status", "/proc/self/status"]).output.decode()
        assert "CapEff:\t0000000000000000" in status
        # gc while a run lives: the proxy and the run's network are not strays.
        assert ec.case.json("gc")["actions"] == []
        assert proxy.id in [c.id for c in containers_of(ec.case.root, include_proxy=True)]
        networks = proxy.attrs["NetworkSettings"]["Networks"]
        assert ec.internet.network in networks, sorted(networks)
        assert len(networks) == 2, sorted(networks)
    finally:
        ec.case.ok("stop", run_id)
        proc.wait(timeout=60)


def test_policy_files_hold_keys_only_where_runs_cannot_look(egress_case: EgressCase, tmp_path: Path) -> None:
    ec = egress_case
    task = ec.case.create_task(ec.repo, "policy file")
    proc = ec.case.popen(
        "run", task, "--api-key", "ANTHROPIC_API_KEY=https://api.test", "--", "sleep", "300",
        env={**ec.env, "ANTHROPIC_API_KEY": TEST_KEY},
    )  # fmt: skip
    run_id = ec.case.wait_running(task)
    try:
        policies = ec.case.root / ".launcher" / "egress" / "policies"
        (policy,) = list(policies.glob("*.json"))
        assert policy.stat().st_mode & 0o077 == 0, oct(policy.stat().st_mode)
        assert policies.stat().st_mode & 0o077 == 0
        assert TEST_KEY in policy.read_text()
    finally:
        ec.case.ok("stop", run_id)
        proc.wait(timeout=60)
    assert not list(policies.glob("*.json")), "the policy (and its key) goes with the run"
    record = ec.case.run_record(run_id)
    assert TEST_KEY not in json.dumps(record)


__all__ = ["Internet", "Path"]

"""Spare networks ([network] spare_networks): a run's network kept for the next run, for real.

Real Docker, the real proxy, the stand-in internet of netkit.py. What must hold: a run that takes
a spare gets its own policy and nothing of the run before it; two runs never share one; only
the proxy is ever on a waiting spare; gc removes spares that wait and leaves nothing behind.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from helpers import containers_of, docker_client, networks_of, wait_for
from netkit import EgressCase, facts_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

CURL = "curl -sS -o /dev/null -w '%{http_code}' --max-time 20 http://allowed.test/ || true"


def with_spares(ec: EgressCase, count: int) -> None:
    toml = ec.case.root / "launcher.toml"
    toml.write_text(toml.read_text().replace("[network]\n", f"[network]\nspare_networks = {count}\n", 1))


def leases(root: Path) -> dict[int, str]:
    with sqlite3.connect(root / ".launcher" / "state.db") as db:
        return {int(slot): str(holder) for slot, holder in db.execute("SELECT slot, run_id FROM subnet_leases")}


def members(network: Any) -> list[str]:
    network.reload()
    return sorted(c["Name"] for c in (network.attrs.get("Containers") or {}).values())


def proxy_name(root: Path) -> str:
    (proxy,) = [c for c in containers_of(root, include_proxy=True) if c.labels.get("launcher.kind") == "egress-proxy"]
    return str(proxy.name)


def reach(ec: EgressCase, task: str, *options: str) -> tuple[dict[str, Any], str]:
    """Run ``task`` with a probe of allowed.test; its record and the HTTP code it got."""
    script = f'echo "FACT code=\\"$({CURL})\\""'
    result = ec.run(task, *options, "--", "sh", "-c", script)
    assert result.exit_code == 0, result
    record = json.loads(result.stdout)
    log = ec.case.ok("logs", record["id"]).stdout
    return record, str(facts_of(log)["code"])


def test_the_next_run_takes_the_spare_with_its_own_policy_and_gc_removes_it(egress_case: EgressCase) -> None:
    ec = egress_case
    with_spares(ec, 1)
    root = ec.case.root

    first, code = reach(ec, ec.case.create_task(ec.repo, "allowed"), "--allow", "allowed.test")
    assert code == "200"
    (spare,) = networks_of(root)
    assert spare.name == first["details"]["egress"]["network"]
    assert spare.attrs["Labels"]["launcher.kind"] == "spare-network"
    assert "launcher.run-id" not in spare.attrs["Labels"]
    # Waiting: its lease the spare's, no policy for it, nothing but the proxy on it.
    assert sorted(leases(root).values()) == [f"spare:{spare.name}"]
    assert not list((root / ".launcher" / "egress" / "policies").glob("*.json"))
    assert members(spare) == [proxy_name(root)]

    # The next run takes it, and with it only its own policy: allowed.test is not on its list.
    second, code = reach(ec, ec.case.create_task(ec.repo, "not allowed"))
    assert second["details"]["egress"]["network"] == spare.name
    assert code == "403"
    decisions = [json.loads(line) for line in ec.case.ok("logs", second["id"], "--egress").stdout.splitlines()]
    assert decisions
    assert {d["run_id"] for d in decisions} == {second["id"]}
    assert second["egress"]["denied"] == ["allowed.test:80"], second["egress"]
    assert first["egress"]["allowed"] == ["allowed.test:80"], first["egress"]
    assert sorted(leases(root).values()) == [f"spare:{spare.name}"]

    report = ec.case.json("gc")
    assert any(a["kind"] == "remove-network" and a["target"] == spare.name for a in report["actions"]), report
    assert networks_of(root) == []
    assert leases(root) == {}
    assert containers_of(root, include_proxy=True) == [], "with no network left, gc removes the proxy"


HOLD = "echo up; while [ ! -e /tmp/go ]; do sleep 0.1; done; " + CURL


def test_runs_at_once_never_share_a_spare_and_only_as_many_as_asked_for_are_kept(
    egress_case: EgressCase,
) -> None:
    ec = egress_case
    with_spares(ec, 1)
    root = ec.case.root
    reach(ec, ec.case.create_task(ec.repo, "leaves a spare"), "--allow", "allowed.test")
    (spare,) = networks_of(root)

    tasks = [ec.case.create_task(ec.repo, f"at once {i}") for i in range(3)]
    for task in tasks:
        ec.case.ok("run", "--detach", task, "--allow", "allowed.test", "--timeout", "180", "--", "sh", "-c", HOLD)
    runs = [ec.case.wait_running(task) for task in tasks]
    networks = {run: ec.case.run_record(run)["details"]["egress"]["network"] for run in runs}
    # Three live runs, three networks: one of them took the spare, the others made their own.
    assert len(set(networks.values())) == 3, networks
    assert list(networks.values()).count(spare.name) == 1, networks
    assert sorted(h for h in leases(root).values() if not h.startswith("spare:")) == sorted(runs)

    client = docker_client()
    try:
        for run in runs:
            (container,) = client.containers.list(filters={"label": f"launcher.run-id={run}"})
            container.exec_run(["touch", "/tmp/go"])
    finally:
        client.close()
    waited = ec.case.cli("wait", *runs, timeout=240)
    assert waited.exit_code == 0, waited

    # Only one is kept (spare_networks = 1); the others went with their runs.
    (kept,) = wait_for(lambda: networks_of(root), timeout=30, what="the networks to settle")
    assert kept.name in networks.values()
    assert members(kept) == [proxy_name(root)]
    assert sorted(leases(root).values()) == [f"spare:{kept.name}"]

    ec.case.ok("gc")
    assert networks_of(root) == []
    assert leases(root) == {}

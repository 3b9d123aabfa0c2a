"""The decisions behind host port leases: names, ranges, the lowest free port, skipping what the
host holds, the store's one-port-per-name rule, and how a taken port is recognised."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from launcher.adapters.docker.port_relay import default_gateway
from launcher.adapters.docker.sidecars import port_in_use
from launcher.adapters.hostports import loopback_port_free
from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.core.portleases import (
    PortLease,
    PortLeaser,
    PortRange,
    PortWish,
    gather_wishes,
    lowest_free_port,
    parse_option,
    port_env,
)
from launcher.errors import CapacityError, InvalidInputError


def test_a_port_option_names_the_agent_or_a_service_and_maybe_its_container_port() -> None:
    assert parse_option("web") == PortWish(name="web")
    assert parse_option("api=9000") == PortWish(name="api", container_port=9000)
    assert parse_option("pg=db:5432") == PortWish(name="pg", service="db", container_port=5432)
    for bad in ("", "9web", "web=", "web=0x10", "web=70000", "web=DB:5432", "we-b", "pg=db:"):
        with pytest.raises(InvalidInputError):
            parse_option(bad)


def test_the_command_line_comes_first_then_the_profile_then_launcher_toml() -> None:
    wishes = gather_wishes(["api=9000", "web"], {"web": 3000, "docs": ""}, {"docs": 8080, "metrics": 9100})
    assert [w.name for w in wishes] == ["api", "web", "docs", "metrics"]
    assert wishes[1].container_port is None  # the command line's meaning wins over the profile's
    assert wishes[2].container_port is None
    with pytest.raises(InvalidInputError, match="twice"):
        gather_wishes(["web", "WEB=1"], {}, {})
    with pytest.raises(InvalidInputError, match="at most"):
        gather_wishes([f"p{n}" for n in range(17)], {}, {})


def test_port_ranges_are_unprivileged_and_low_first() -> None:
    assert PortRange.parse("28000-28999").size == 1000
    assert PortRange.parse("30000") == PortRange(low=30000, high=30000)
    for bad in ("80-90", "3000-2000", "a-b", "28000-70000"):
        with pytest.raises(InvalidInputError):
            PortRange.parse(bad)


def test_the_lowest_port_nobody_holds_or_skips_and_capacity_when_none_is_left() -> None:
    assert lowest_free_port([], 100, 105) == 100
    assert lowest_free_port([100, 101, 103], 100, 105, skip=[102]) == 104
    with pytest.raises(CapacityError, match="port_range"):
        lowest_free_port([100, 101], 100, 101)


def test_the_agent_listens_on_port_name_and_port_is_the_first_of_its_own() -> None:
    leases = [
        PortLease(name="pg", host_port=28000, container_port=5432, service="db"),
        PortLease(name="web", host_port=28001, container_port=28001),
        PortLease(name="api", host_port=28002, container_port=9000),
    ]
    assert port_env(leases) == {"PORT_WEB": "28001", "PORT": "28001", "PORT_API": "9000"}
    assert leases[1].url == "http://127.0.0.1:28001"


def test_a_run_holds_one_port_per_name_a_second_lease_replaces_it_and_release_frees_all(tmp_path: Path) -> None:
    with SqliteCoordinator(tmp_path / "state.db") as store:
        assert store.lease_port("r1", "web", 100, 110) == 100
        assert store.lease_port("r1", "api", 100, 110) == 101
        assert store.lease_port("r2", "web", 100, 110) == 102
        # Moving on from a port the host holds: the name's lease is replaced, not added to.
        assert store.lease_port("r1", "web", 100, 110, skip=[100]) == 103
        assert store.port_leases() == {101: ("r1", "api"), 102: ("r2", "web"), 103: ("r1", "web")}
        assert store.release_ports("r1") == 2
        assert store.port_leases() == {102: ("r2", "web")}
        assert store.lease_port("r3", "web", 100, 110) == 100


def test_a_port_something_else_holds_is_skipped_not_fought_over(tmp_path: Path) -> None:
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    busy = held.getsockname()[1]
    try:
        assert loopback_port_free(busy) is False
        with SqliteCoordinator(tmp_path / "state.db") as store:
            leaser = PortLeaser(store, PortRange(low=busy, high=busy + 1), loopback_port_free)
            if not loopback_port_free(busy + 1):
                pytest.skip(f"port {busy + 1} is held on this machine by something else too")
            assert leaser.lease("r1", "web") == busy + 1
            assert store.port_leases() == {busy + 1: ("r1", "web")}
            with pytest.raises(CapacityError):
                leaser.lease("r2", "web")
    finally:
        held.close()


def test_every_port_the_host_holds_is_tried_a_bounded_number_of_times(tmp_path: Path) -> None:
    with SqliteCoordinator(tmp_path / "state.db") as store:
        looks: list[int] = []

        def never_free(port: int) -> bool:
            looks.append(port)
            return False

        with pytest.raises(CapacityError, match="tries"):
            PortLeaser(store, PortRange(low=30000, high=39999), never_free).lease("r1", "web")
        assert len(looks) == len(set(looks)) == 64


def test_a_taken_port_is_told_from_other_start_failures() -> None:
    engine = (
        "driver failed programming external connectivity on endpoint x (abc): "
        "Bind for 127.0.0.1:28004 failed: port is already allocated"
    )
    proxy = "listen tcp4 127.0.0.1:28005: bind: address already in use"
    assert port_in_use(engine) == 28004
    assert port_in_use(proxy) == 28005
    assert port_in_use("OCI runtime create failed: no such file") is None


def test_the_relay_accepts_only_its_default_gateway() -> None:
    table = (
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\n"
        "eth1\t00D0D50A\t00000000\t0001\t0\t0\t0\tF0FFFFFF\n"
        "eth0\t00000000\t010011AC\t0003\t0\t0\t0\t00000000\n"
    )
    assert default_gateway(table) == "172.17.0.1"
    assert default_gateway(table.splitlines()[0] + "\n") is None

"""Which resolved addresses the proxy connects to: public ones, judged by the IPv4 address an IPv6 form carries."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.egress.addresses import address_refusal, judged_as, normalised


@pytest.mark.parametrize(
    ("address", "refused"),
    [
        ("8.8.8.8", False),
        ("2606:4700::1111", False),
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("172.16.0.1", True),
        ("192.168.1.1", True),
        ("169.254.169.254", True),
        ("100.64.0.1", True),
        ("0.0.0.0", True),
        ("224.0.0.1", True),
        ("240.0.0.1", True),
        ("255.255.255.255", True),
        ("::1", True),
        ("::", True),
        ("fe80::1", True),
        ("fe80::1%eth0", True),
        ("fc00::1", True),
        ("fd12::1", True),
        ("ff02::1", True),
        ("::ffff:10.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("2002:0a00:0001::1", True),  # 6to4 around 10.0.0.1
        ("64:ff9b::a9fe:a9fe", True),  # NAT64 around 169.254.169.254
        ("not-an-address", True),
    ],
)
def test_address_classification(address: str, refused: bool) -> None:
    assert (address_refusal(address) is not None) == refused


def test_public_cidr_and_deny_addr_override_the_classification() -> None:
    public = [ipaddress.ip_network("127.0.0.0/24")]
    deny = {ipaddress.ip_address("127.0.0.9"), ipaddress.ip_address("8.8.8.8")}
    assert address_refusal("127.0.0.2", public, deny) is None
    assert address_refusal("::ffff:127.0.0.2", public, deny) is None
    assert address_refusal("127.0.0.9", public, deny) == "127.0.0.9, the launcher host"
    assert address_refusal("::ffff:8.8.8.8", public, deny) == "::ffff:8.8.8.8, the launcher host"
    assert address_refusal("127.0.1.1", public, deny) is not None


@given(st.ip_addresses(v=4))
def test_every_ipv6_form_that_carries_an_ipv4_address_is_judged_as_that_address(ip: ipaddress.IPv4Address) -> None:
    carriers = [
        ipaddress.IPv6Address(f"::ffff:{ip}"),
        ipaddress.IPv6Address((0x2002 << 112) | (int(ip) << 80)),  # 6to4
        ipaddress.IPv6Address(f"64:ff9b::{ip}"),  # NAT64
    ]
    for carrier in carriers:
        assert judged_as(carrier) == ip
        assert (address_refusal(str(carrier)) is None) == (address_refusal(str(ip)) is None)


@given(st.text(max_size=60))
def test_address_refusal_never_raises(text: str) -> None:
    assert address_refusal(text) is None or isinstance(address_refusal(text), str)


def test_socket_addresses_are_normalised_for_matching_subnets() -> None:
    assert normalised("::ffff:10.0.0.1") == ipaddress.IPv4Address("10.0.0.1")
    assert normalised("fe80::1%eth0") == ipaddress.IPv6Address("fe80::1")
    assert normalised("?") is None

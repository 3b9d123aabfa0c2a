"""Which resolved addresses the proxy may connect to: public ones, never the launcher host.

Private ranges named by ``[network] allow_private`` (``--allow-private``) are reachable too,
but never loopback, link-local, cloud metadata, unspecified, multicast or reserved addresses,
whatever range is named: those are refused before the allowed ranges are looked at.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
from collections.abc import Collection, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Never reached through allow_private (launcher.core.netpolicy refuses ranges that overlap
# them; this is the proxy's own guard). 100.100.100.200: Alibaba's metadata service, inside
# the shared address space a corporate range may well cover.
NEVER_PRIVATE = tuple(
    ipaddress.ip_network(net)
    for net in (
        "0.0.0.0/8",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "100.100.100.200/32",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "::/128",
        "::1/128",
        "fe80::/10",
        "fd00:ec2::254/128",
        "ff00::/8",
    )
)


def judged_as(ip: IPAddress) -> IPAddress:
    """IPv6 forms that carry an IPv4 address reach that address, so they are judged by it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_refusal(
    address: str,
    public: Sequence[IPNetwork] = (),
    deny: Collection[IPAddress] = (),
    private_allowed: Sequence[IPNetwork] = (),
) -> str | None:
    """Why the proxy must not connect to this resolved address, or None when it may.

    ``public`` (test only) counts as public; ``private_allowed`` are the operator's internal
    ranges; ``deny`` (the launcher host's addresses) wins over both.
    """
    try:
        raw = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address[:64]!r}, which is not an IP address"
    ip = judged_as(raw)
    if ip in deny or raw in deny:
        return f"{address}, the launcher host"
    if any(ip in net or raw in net for net in public):
        return None
    if private_allowed and any(ip in net for net in private_allowed):
        # Matched by the address the IPv6 form carries only: ::ffff:127.0.0.1 is loopback.
        if any(ip in net for net in NEVER_PRIVATE):
            return f"{address}, which is never reachable (loopback, link-local or metadata)"
        return None
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_private:
        return f"{address}, which is not a public address"
    return None


def normalised(address: str) -> IPAddress | None:
    """A socket's address as an IP (IPv4-mapped IPv6 as IPv4, no zone), None when it is none."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def own_addresses(fib_trie: str = "/proc/net/fib_trie", if_inet6: str = "/proc/net/if_inet6") -> set[IPAddress]:
    """The addresses of this network namespace's interfaces (none when /proc cannot say)."""
    found: set[IPAddress] = set()
    try:
        with open(fib_trie, encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    for previous, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            with contextlib.suppress(ValueError, IndexError):  # a row it cannot read
                found.add(ipaddress.ip_address(previous.strip().removeprefix("|-- ").strip()))
    try:
        with open(if_inet6, encoding="ascii", errors="replace") as f:
            for row in f.read().splitlines():
                with contextlib.suppress(ValueError, IndexError):  # a row it cannot read
                    found.add(ipaddress.IPv6Address(bytes.fromhex(row.split()[0])))
    except OSError:
        pass
    return found

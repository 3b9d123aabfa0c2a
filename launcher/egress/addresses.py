"""Which resolved addresses the proxy may connect to: public ones, never the launcher host."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


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


def address_refusal(address: str, public: Sequence[IPNetwork] = (), deny: Collection[IPAddress] = ()) -> str | None:
    """Why the proxy must not connect to this resolved address, or None when it may."""
    try:
        raw = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address[:64]!r}, which is not an IP address"
    ip = judged_as(raw)
    if ip in deny or raw in deny:
        return f"{address}, the launcher host"
    if any(ip in net or raw in net for net in public):
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

"""Run-network subnets: a configured pool cut into equal slots, one slot per live run.

The coordinator hands out slot numbers (like IDs, under its lock); this module turns a slot
into addresses. Fifty concurrent runs would exhaust Docker's default address pools (about 30
networks), so runs take small subnets from a range of their own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

from launcher.errors import CapacityError, InvalidInputError

# 16 addresses: network, gateway (reserved by Docker even when the bridge holds no address),
# the proxy, the agent, and room for a harvest container; broadcast.
DEFAULT_PREFIX_LENGTH = 28


class RunSubnet(BaseModel):
    model_config = ConfigDict(frozen=True)

    slot: int
    cidr: str
    gateway: str
    proxy_ip: str


class SubnetPool:
    def __init__(self, pool: str, prefix_length: int = DEFAULT_PREFIX_LENGTH) -> None:
        try:
            self.network = ipaddress.IPv4Network(pool, strict=True)
        except ValueError as exc:
            raise InvalidInputError(
                f"[network].subnet_pool {pool!r} is not an IPv4 network", hint="e.g. 10.213.0.0/16"
            ) from exc
        if not 8 <= self.network.prefixlen <= prefix_length or prefix_length > 29:
            raise InvalidInputError(
                f"[network].subnet_pool {pool!r} cannot hold /{prefix_length} run subnets",
                hint="use a pool between /8 and /{prefix_length}",
            )
        self.prefix_length = prefix_length

    @property
    def slots(self) -> int:
        return int(2 ** (self.prefix_length - self.network.prefixlen))

    def subnet(self, slot: int) -> RunSubnet:
        if not 0 <= slot < self.slots:
            raise InvalidInputError(f"subnet slot {slot} is outside the pool's {self.slots} slots")
        size = 2 ** (32 - self.prefix_length)
        base = self.network.network_address + slot * size
        net = ipaddress.IPv4Network(f"{base}/{self.prefix_length}")
        return RunSubnet(slot=slot, cidr=str(net), gateway=str(base + 1), proxy_ip=str(base + 2))


def lowest_free_slot(taken: Iterable[int], slots: int, skip: Iterable[int] = ()) -> int:
    """What both coordinator backends allocate: the lowest slot nobody holds and nobody skips."""
    unavailable = set(taken) | set(skip)
    for slot in range(slots):
        if slot not in unavailable:
            return slot
    raise CapacityError(
        f"all {slots} run-network subnets are in use",
        hint="wait for runs to end, run `launcher gc`, or give [network].subnet_pool a larger range",
    )

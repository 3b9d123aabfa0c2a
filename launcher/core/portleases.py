"""Host ports for runs: asked for by name, leased by the coordinator, published on 127.0.0.1 only.

A run asks for ``NAME[=[SERVICE:]PORT]`` (``--port``, ``[run.ports]``, an agent profile's
``ports``). The coordinator leases a host port from ``[network] port_range`` (one per name per
run, never two runs the same port: its primary key), and the host checks the port is not held
by something else on this machine (a bind on 127.0.0.1); a held one is skipped and the next
leased, a bounded number of times. Runs of another case root have their own coordinator: the
engine refuses a port already published ("port is already allocated") and the caller moves on
the same way.

The agent listens on ``PORT_<NAME>`` inside its container (the container port; by default the
leased number itself, so what a dev server prints is the address the host reaches); ``PORT`` is
the first name's.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping

from pydantic import BaseModel, ConfigDict

from launcher.core.ports.coordinator import PortStore
from launcher.errors import CapacityError, InvalidInputError

PORT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,31}$")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# Every name is one relay listener and one published port: a run needs a few, not hundreds.
MAX_PORTS_PER_RUN = 16
# How many leased ports a run skips because something else holds them, per name.
MAX_PORT_ATTEMPTS = 64
PUBLISH_HOST = "127.0.0.1"


class PortWish(BaseModel):
    """One name a run asks a host port for, and where in the run it leads."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    service: str | None = None  # None: the agent's container
    container_port: int | None = None  # None: the leased port's own number

    @property
    def env_name(self) -> str:
        return f"PORT_{self.name.upper()}"

    def describe(self) -> str:
        where = f"{self.service}:" if self.service else ""
        return f"{self.name}={where}{self.container_port}" if self.container_port else self.name


class PortLease(BaseModel):
    """A leased host port, as the run's record keeps it."""

    model_config = ConfigDict(frozen=True, extra="allow")

    name: str
    host_port: int
    container_port: int
    service: str | None = None

    @property
    def url(self) -> str:
        return f"http://{PUBLISH_HOST}:{self.host_port}"


class PortRange(BaseModel):
    model_config = ConfigDict(frozen=True)

    low: int
    high: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        low_text, sep, high_text = text.strip().partition("-")
        try:
            low, high = int(low_text), int(high_text if sep else low_text)
        except ValueError:
            raise InvalidInputError(f"[network] port_range {text!r} is not LOW-HIGH", hint="e.g. 28000-28999") from None
        if not 1024 <= low <= high <= 65535:
            raise InvalidInputError(
                f"[network] port_range {text!r} must lie within 1024-65535, low first",
                hint="unprivileged ports only; e.g. 28000-28999",
            )
        return cls(low=low, high=high)

    @property
    def size(self) -> int:
        return self.high - self.low + 1


def _port_number(text: str, what: str) -> int:
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 65535:
        raise InvalidInputError(f"{what}: {text!r} is not a port (1-65535)")
    return int(text)


def parse_wish(name: str, target: int | str | None, *, what: str) -> PortWish:
    """``target``: a container port, ``SERVICE:PORT``, or nothing (the leased port itself)."""
    if not PORT_NAME.match(name):
        raise InvalidInputError(
            f"{what}: {name!r} is no port name", hint="a letter, then letters, digits or _ (becomes PORT_<NAME>)"
        )
    if target is None or target == "" or target == 0:
        return PortWish(name=name)
    if isinstance(target, int):
        return PortWish(name=name, container_port=_port_number(str(target), what))
    service, sep, port = target.rpartition(":")
    if sep and not SERVICE_NAME.match(service):
        raise InvalidInputError(f"{what}: {service!r} is no service name")
    return PortWish(name=name, service=service or None, container_port=_port_number(port, what))


def parse_option(text: str) -> PortWish:
    """``--port NAME``, ``--port NAME=8000``, ``--port NAME=SERVICE:5432``."""
    name, sep, target = text.partition("=")
    if sep and not target:
        raise InvalidInputError(f"--port {text!r}: nothing after '='", hint="NAME, NAME=PORT or NAME=SERVICE:PORT")
    return parse_wish(name.strip(), target.strip() if sep else None, what=f"--port {text}")


def gather_wishes(
    options: Iterable[str], profile: Mapping[str, int | str], configured: Mapping[str, int | str]
) -> tuple[PortWish, ...]:
    """The command line's first (in its order: the first is ``PORT``), then the profile's, then
    [run.ports]; a name given twice keeps its most specific meaning."""
    wishes: dict[str, PortWish] = {}
    for text in options:
        wish = parse_option(text)
        if wish.name.upper() in {w.upper() for w in wishes}:
            raise InvalidInputError(f"--port {wish.name} is given twice")
        wishes[wish.name] = wish
    for source, table in (("agent profile's ports", profile), ("[run.ports]", configured)):
        for name, target in table.items():
            if name.upper() not in {w.upper() for w in wishes}:
                wishes[name] = parse_wish(name, target, what=f"{source} {name}")
    if len(wishes) > MAX_PORTS_PER_RUN:
        raise InvalidInputError(f"{len(wishes)} ports asked for; a run gets at most {MAX_PORTS_PER_RUN}")
    return tuple(wishes.values())


def lowest_free_port(taken: Iterable[int], low: int, high: int, skip: Iterable[int] = ()) -> int:
    """What both coordinator backends allocate: the lowest port nobody holds and nobody skips."""
    unavailable = set(taken) | set(skip)
    for port in range(low, high + 1):
        if port not in unavailable:
            return port
    raise CapacityError(
        f"all {high - low + 1} host ports of {low}-{high} are leased or in use",
        hint="wait for runs to end, run `launcher gc`, or give [network] port_range a larger range",
    )


def port_env(leases: Iterable[PortLease]) -> dict[str, str]:
    """What the agent listens on: ``PORT_<NAME>`` for each of its own ports, ``PORT`` for the first."""
    env: dict[str, str] = {}
    for lease in leases:
        if lease.service is not None:
            continue  # a service's port: the agent reaches the service by name, not through it
        env[f"PORT_{lease.name.upper()}"] = str(lease.container_port)
        env.setdefault("PORT", str(lease.container_port))
    return env


class PortLeaser:
    """Leases a run's ports, skipping any that something else on this host holds."""

    def __init__(self, store: PortStore, ports: PortRange, is_free: Callable[[int], bool]) -> None:
        self.store, self.range, self.is_free = store, ports, is_free

    def lease(self, run_id: str, name: str, skip: Iterable[int] = ()) -> int:
        """One port for ``name`` (replacing what the run held under it): free in the coordinator,
        free on this host, not in ``skip``."""
        skipped = set(skip)
        for _ in range(MAX_PORT_ATTEMPTS):
            port = self.store.lease_port(run_id, name, self.range.low, self.range.high, skipped)
            if self.is_free(port):
                return port
            skipped.add(port)
        raise CapacityError(
            f"no free host port for {name} after {MAX_PORT_ATTEMPTS} tries in {self.range.low}-{self.range.high}",
            hint="other programs on this host hold those ports; choose another [network] port_range",
        )

    def lease_all(self, run_id: str, wishes: Iterable[PortWish]) -> list[PortLease]:
        leases = []
        for wish in wishes:
            port = self.lease(run_id, wish.name)
            leases.append(
                PortLease(
                    name=wish.name,
                    host_port=port,
                    container_port=wish.container_port or port,
                    service=wish.service,
                )
            )
        return leases

    def release(self, run_id: str) -> int:
        return self.store.release_ports(run_id)

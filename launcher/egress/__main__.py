"""The proxy's command line::

    egress-proxy --policies DIR --logs DIR [--listen HOST:PORT] [--public-cidr CIDR]...
                 [--allow-private CIDR]... [--deny-addr IP]... [--ca-file FILE]
                 [--connect-timeout SECONDS] [--idle-exit SECONDS]

Run on the host as ``python -m launcher.egress``; in the proxy's container, where this package
is mounted as ``egress`` under a folder that is not on ``sys.path`` (see
launcher/adapters/docker/egress.py), through a ``python3 -I -c`` line that puts it there.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import signal
import sys

from .addresses import IPAddress, judged_as, own_addresses
from .idle import IdleExit
from .server import Config, EgressProxy


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit() and int(port) < 65536):
        raise ValueError(text)
    return host.strip("[]"), int(port)  # port 0: any free port, as the ready line reports


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def parse_args(argv: list[str] | None) -> tuple[Config, str, int, float | None]:
    parser = argparse.ArgumentParser(prog="egress-proxy", description="launcher's egress proxy")
    parser.add_argument("--listen", type=_listen, default=("0.0.0.0", 3128), help="HOST:PORT (default 0.0.0.0:3128)")  # noqa: S104
    parser.add_argument("--policies", required=True, help="directory of per-run policy files (*.json)")
    parser.add_argument("--logs", required=True, help="directory the decision logs are appended to")
    parser.add_argument(
        "--public-cidr",
        type=lambda text: ipaddress.ip_network(text, strict=False),
        action="append",
        default=[],
        help="TEST ONLY: treat addresses in CIDR as public (repeatable)",
    )
    parser.add_argument(
        "--allow-private",
        type=lambda text: ipaddress.ip_network(text, strict=True),
        action="append",
        default=[],
        metavar="CIDR",
        help="a private range that may be reached, e.g. an internal mirror's (repeatable); never loopback, "
        "link-local or metadata addresses, never the launcher host's or this proxy's own addresses",
    )
    parser.add_argument(
        "--deny-addr",
        type=lambda text: judged_as(ipaddress.ip_address(text)),
        action="append",
        default=[],
        help="an address of the launcher host, refused even if public (repeatable)",
    )
    parser.add_argument("--ca-file", help="extra CA bundle trusted for API-key upstreams")
    parser.add_argument("--connect-timeout", type=_positive, default=10.0, help="seconds (default 10)")
    parser.add_argument(
        "--idle-exit",
        type=_positive,
        default=None,
        metavar="SECONDS",
        help="exit (status 0) after SECONDS with no policy file and no connection (default: never)",
    )
    args = parser.parse_args(argv)
    for option in ("policies", "logs"):
        if not os.path.isdir(getattr(args, option)):
            parser.error(f"--{option} {getattr(args, option)}: not a directory")
    deny: set[IPAddress] = set(args.deny_addr)
    if args.allow_private:
        # This proxy's own addresses (on the runs' networks too) are inside no range it may
        # reach: a run must not loop back into the proxy or reach its neighbours through it.
        deny.update(own_addresses())
    config = Config(
        policies=args.policies,
        logs=args.logs,
        public_cidrs=tuple(args.public_cidr),
        private_allowed=tuple(args.allow_private),
        deny_addrs=frozenset(deny),
        ca_file=args.ca_file,
        connect_timeout=args.connect_timeout,
    )
    host, port = args.listen
    return config, host, port, args.idle_exit


async def serve(config: Config, host: str, port: int, idle_exit: float | None = None) -> None:
    """Serve until SIGTERM or SIGINT, or until idle for ``idle_exit`` seconds (see idle.py)."""
    proxy = EgressProxy(config)
    server = await proxy.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"egress proxy listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    # Kept referenced while serving (the loop holds tasks weakly); it holds the exit lock after.
    idle = IdleExit(config.logs, idle_exit, proxy.idle) if idle_exit is not None else None
    watcher = asyncio.ensure_future(idle.wait()) if idle is not None else None
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait([f for f in (stopping, watcher) if f is not None], return_when=asyncio.FIRST_COMPLETED)
    for future in (stopping, watcher):
        if future is not None:
            future.cancel()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    config, host, port, idle_exit = parse_args(argv)
    try:
        asyncio.run(serve(config, host, port, idle_exit))
    except OSError as exc:
        print(f"egress proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

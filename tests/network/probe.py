"""Runs inside an agent container: tries every way out of the run and prints what happened.

Each attempt prints one line ``FACT name=<json>``; the test reads them from the run's log.
Usage: python3 probe.py JSON_ARGS   (keys: allowed_ip, host_port, host_addrs, peer_ip)
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

# Assembled at run time, so this file itself never contains what it searches for.
KEY_MARK = "sk-" + "launcher" + "-test-"


def fact(name: str, value: Any) -> None:
    print(f"FACT {name}={json.dumps(value)}", flush=True)


def curl(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        ["curl", "-sS", "-m", "15", "-o", "/tmp/body", "-w", "%{http_code}", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    body = Path("/tmp/body").read_text(errors="replace") if Path("/tmp/body").exists() else ""
    return {"rc": out.returncode, "code": out.stdout.strip(), "err": out.stderr.strip()[-300:], "body": body[-300:]}


def tcp(host: str, port: int) -> dict[str, Any]:
    start = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=3):
            return {"connected": True}
    except OSError as exc:
        return {"connected": False, "error": str(exc), "seconds": round(time.monotonic() - start, 3)}


def own_addresses() -> list[str]:
    lines = Path("/proc/net/fib_trie").read_text().splitlines()
    found = {prev.split()[-1] for prev, line in itertools.pairwise(lines) if "/32 host LOCAL" in line}
    return sorted(a for a in found if not a.startswith("127."))


def ipv6_addresses() -> list[dict[str, str]]:
    entries = []
    for line in Path("/proc/net/if_inet6").read_text().splitlines() if Path("/proc/net/if_inet6").exists() else []:
        raw, _index, _plen, scope, _flags, dev = line.split()
        entries.append({"address": str(ipaddress.IPv6Address(bytes.fromhex(raw))), "scope": scope, "dev": dev})
    return entries


def key_anywhere() -> list[str]:
    """Every place in the container holding the real key (by its test-only prefix)."""
    mark = KEY_MARK.encode()
    hits = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for part in ("environ", "cmdline"):
                try:
                    if mark in (proc / part).read_bytes():
                        hits.append(f"{proc}/{part}")
                except OSError:
                    continue
    if KEY_MARK in "".join(os.environ.values()):
        hits.append("os.environ")
    for top, dirs, files in os.walk("/"):
        if top == "/":
            dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
        for name in files:
            path = os.path.join(top, name)
            try:
                if os.path.islink(path) or os.path.getsize(path) > 4 * 1024 * 1024:
                    continue
                with open(path, "rb") as handle:
                    if mark in handle.read():
                        hits.append(path)
            except OSError:
                continue
    return hits


def main() -> None:
    args = json.loads(sys.argv[1])
    mine = own_addresses()
    fact("own_addresses", mine)
    fact(
        "interfaces", sorted(line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:])
    )
    if args.get("none_only"):
        return
    fact("http_allowed", curl("http://allowed.test/"))
    fact("http_denied", curl("http://denied.test/"))
    fact("connect_allowed", curl("-p", "http://allowed.test/"))
    fact("connect_denied", curl("-p", "http://denied.test/"))
    fact("ip_literal", curl(f"http://{args['allowed_ip']}/"))
    fact("connect_metadata", curl("-p", "http://169.254.169.254/latest/meta-data/"))
    fact("no_proxy", curl("--noproxy", "*", "http://allowed.test/"))
    fact("raw_tcp_server", tcp(args["allowed_ip"], 80))
    if mine:
        gateway = str(ipaddress.IPv4Network(f"{mine[0]}/28", strict=False).network_address + 1)
        fact("host_via_gateway", tcp(gateway, args["host_port"]))
    for addr in args["host_addrs"]:
        fact(f"host_at_{addr}", tcp(addr, args["host_port"]))
    if args.get("peer_ip"):
        fact("peer_direct", tcp(args["peer_ip"], 8000))
        fact("peer_via_proxy", curl(f"http://{args['peer_ip']}:8000/"))
    start = time.monotonic()
    try:
        socket.getaddrinfo("allowed.test", 80)
        fact("dns", {"resolved": True, "seconds": round(time.monotonic() - start, 3)})
    except OSError as exc:
        fact("dns", {"resolved": False, "error": str(exc), "seconds": round(time.monotonic() - start, 3)})
    fact("ipv6", ipv6_addresses())
    git = subprocess.run(
        ["git", "ls-remote", "https://denied.test/some/repo.git"], capture_output=True, text=True, check=False
    )
    fact("git_denied", {"rc": git.returncode, "err": git.stderr.strip()[-400:]})
    if os.environ.get("ANTHROPIC_BASE_URL"):
        fact("key_env", {"value": os.environ.get("ANTHROPIC_API_KEY"), "base_url": os.environ["ANTHROPIC_BASE_URL"]})
        fact(
            "api",
            curl(
                "-X",
                "POST",
                "-H",
                "x-api-key: client-sent-key",
                "-H",
                "Authorization: Bearer client-sent-token",
                "--data",
                '{"model": "m"}',
                os.environ["ANTHROPIC_BASE_URL"] + "/v1/messages?beta=true",
            ),
        )
        fact("key_hits", key_anywhere())


if __name__ == "__main__":
    main()

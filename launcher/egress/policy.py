"""Per-run policies: what each run may reach, read from the files the launcher writes.

Each run has a policy file ``*.json`` in --policies (written atomically by the launcher, re-read
when a new client connects)::

    {"version": 1, "run_id": "R-7", "subnet": "10.213.0.16/28", "mode": "allowlist" | "open",
     "allow": [{"host": "pypi.org", "port": null}, {"host": "*.github.com", "port": 443}],
     "api_keys": [{"name": "ANTHROPIC_API_KEY", "upstream": "https://api.anthropic.com",
                   "header": "x-api-key", "value": "..."}],
     "log": "R-7.jsonl"}

A connection belongs to the policy whose subnet holds both its local and its peer address. A
file with anything off in it is ignored as a whole (the run then reaches nothing).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from .addresses import IPNetwork, normalised
from .hostnames import check_host, check_pattern, pattern_covers, split_upstream
from .tokens import TOKEN

MAX_POLICY = 1024 * 1024


@dataclass(frozen=True)
class AllowRule:
    host: str  # a name, or "*.suffix" for every name under suffix (not suffix itself)
    port: int | None  # None: 80 and 443

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


def allow_reason(host: str, port: int, mode: str, rules: Sequence[AllowRule]) -> str | None:
    """Why the normalised host:port may be reached, or None when the policy refuses it."""
    if mode == "open":
        return "open"
    for rule in rules:
        if port in ((80, 443) if rule.port is None else (rule.port,)) and pattern_covers(rule.host, host):
            return f"allowlist {rule}"
    return None


@dataclass(frozen=True)
class ApiKey:
    name: str
    host: str
    port: int
    base_path: str
    header: str
    value: str = field(repr=False)

    @property
    def authority(self) -> str:
        return self.host if self.port == 443 else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Policy:
    run_id: str
    subnet: IPNetwork
    mode: str
    allow: tuple[AllowRule, ...]
    api_keys: dict[str, ApiKey]
    log: str | None  # a file name in --logs; None: decisions go to stderr


def key_value_ok(value: str) -> bool:
    """Whether value may be sent as a header's value: printable ASCII, so no line break in it."""
    return bool(value) and value.isascii() and value.isprintable()


def _parse_api_key(entry: object, where: str) -> ApiKey:
    # Messages name fields, never values: a value may be a key.
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    name, upstream, header, value = (entry.get(k) for k in ("name", "upstream", "header", "value"))
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{where}.name is not a key name")
    if not isinstance(header, str) or not TOKEN.fullmatch(header):
        raise ValueError(f"{where}.header is not a header name")
    if not isinstance(value, str) or not key_value_ok(value):
        raise ValueError(f"{where}.value is not printable ASCII text")
    if not isinstance(upstream, str):
        raise ValueError(f"{where}.upstream is not https://host[:port][/path]")
    try:
        host, port, base_path = split_upstream(upstream)
        return ApiKey(name, check_host(host), port, base_path, header, value)
    except ValueError as exc:
        raise ValueError(f"{where}.upstream: {exc}") from None


def parse_policy(doc: object) -> Policy:
    """A policy file's JSON value as a Policy; ValueError when anything in it is off."""
    if not isinstance(doc, dict) or doc.get("version") != 1:
        raise ValueError("not a version 1 policy")
    run_id, subnet, mode, log = (doc.get(k) for k in ("run_id", "subnet", "mode", "log"))
    if not isinstance(run_id, str) or not run_id:
        raise ValueError("run_id is missing")
    if not isinstance(subnet, str):
        raise ValueError("subnet is missing")
    if mode not in ("allowlist", "open"):
        raise ValueError("mode is neither allowlist nor open")
    rules = []
    allow = doc.get("allow") or []
    if not isinstance(allow, list):
        raise ValueError("allow is not a list")
    for i, entry in enumerate(allow):
        host = entry.get("host") if isinstance(entry, dict) else None
        port = entry.get("port") if isinstance(entry, dict) else None
        if not isinstance(host, str) or not (port is None or (type(port) is int and 0 < port < 65536)):
            raise ValueError(f"allow[{i}] is not {{host, port}}")
        try:
            rules.append(AllowRule(check_pattern(host), port))
        except ValueError as exc:
            raise ValueError(f"allow[{i}].host: {exc}") from None
    keys = doc.get("api_keys") or []
    if not isinstance(keys, list):
        raise ValueError("api_keys is not a list")
    api_keys = {key.name: key for key in (_parse_api_key(entry, f"api_keys[{i}]") for i, entry in enumerate(keys))}
    # The log is a file name inside --logs, never a path out of it.
    if not isinstance(log, str) or not log or any(s in log for s in ("/", "\\", "..", "\0")):
        log = None
    return Policy(
        run_id=run_id,
        subnet=ipaddress.ip_network(subnet, strict=False),
        mode=mode,
        allow=tuple(rules),
        api_keys=api_keys,
        log=log,
    )


class PolicyStore:
    """The policies in a directory, re-read only where (name, mtime, size, inode) changed.

    The inode catches a same-size rename within one timestamp tick.
    """

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._files: dict[str, tuple[tuple[int, int, int], Policy | None]] = {}

    def refresh(self) -> None:
        try:
            names = sorted(
                e.name
                for e in os.scandir(self.directory)
                if e.name.endswith(".json") and not e.name.startswith(".") and e.is_file()
            )
        except OSError as exc:
            print(f"egress proxy: cannot list policies: {exc}", file=sys.stderr)
            names = []
        files = {}
        for name in names:
            path = os.path.join(self.directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue  # removed since the listing
            key = (st.st_mtime_ns, st.st_size, st.st_ino)
            cached = self._files.get(name)
            files[name] = cached if cached is not None and cached[0] == key else (key, self._load(path, name))
        self._files = files

    @staticmethod
    def _load(path: str, name: str) -> Policy | None:
        try:
            with open(path, "rb") as f:
                policy = parse_policy(json.loads(f.read(MAX_POLICY)))
        except (OSError, ValueError, RecursionError) as exc:
            print(f"egress proxy: ignoring policy {name}: {exc}", file=sys.stderr)
            return None
        if policy.log is None:
            print(f"egress proxy: policy {name}: log is not a plain file name; logging to stderr", file=sys.stderr)
        return policy

    def __len__(self) -> int:
        """How many policy files the last refresh found (unreadable ones too: a run is there)."""
        return len(self._files)

    def find(self, local: str, peer: str) -> Policy | None:
        """The policy whose subnet holds both addresses (the most specific, if several do)."""
        local_ip, peer_ip = normalised(local), normalised(peer)
        if local_ip is None or peer_ip is None:
            return None
        found = [
            policy
            for _, policy in self._files.values()
            if policy is not None and local_ip in policy.subnet and peer_ip in policy.subnet
        ]
        return max(found, key=lambda policy: policy.subnet.prefixlen, default=None)

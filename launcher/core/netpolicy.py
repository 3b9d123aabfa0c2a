"""What a run may reach: the egress policy, its presets, API-key routes and the agent's view.

Pure logic. The proxy (launcher/egress) enforces the policy; this module turns command-line
options and launcher.toml into the policy document the proxy reads, and into the environment
that points the agent at the proxy. Hosts are judged by the proxy's own rule
(launcher/egress/hostnames.py), so the launcher never writes a policy the proxy would ignore,
and IP literals are refused here already.
"""

from __future__ import annotations

import heapq
import ipaddress
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from launcher.egress.hostnames import AddressNotName, BareWildcard, check_pattern, split_upstream
from launcher.egress.policy import key_value_ok
from launcher.errors import InvalidInputError

NetworkMode = Literal["none", "allowlist", "open"]
# bridge: the name isolated runs used before the proxy existed.
_MODES: dict[str, NetworkMode] = {"none": "none", "allowlist": "allowlist", "open": "open", "bridge": "open"}
PROXY_PORT = 3128
KEY_ROUTE_PREFIX = "/_launcher/keys"
# SDKs refuse to start without a key; this is what they get instead of the real one.
KEY_PLACEHOLDER = "launcher-proxy-injects-the-real-key"

BUILTIN_PRESETS: dict[str, tuple[str, ...]] = {
    "pypi": ("pypi.org", "files.pythonhosted.org"),
    "debian": ("deb.debian.org", "security.debian.org"),
    "npm": ("registry.npmjs.org",),
    "github": (
        "github.com",
        "api.github.com",
        "codeload.github.com",
        "objects.githubusercontent.com",
        "raw.githubusercontent.com",
    ),
    "anthropic": ("api.anthropic.com",),
    "openai": ("api.openai.com",),
}

# Which header carries which vendor's key; anything else is a bearer token.
_KEY_HEADERS = {"ANTHROPIC_API_KEY": ("x-api-key", "{key}")}


class AllowRule(BaseModel):
    """An exact host, or ``*.suffix`` (any name under suffix, not suffix itself).

    No port means 80 and 443 only: other ports (22 for git over SSH) must be named.
    """

    model_config = ConfigDict(frozen=True)

    host: str
    port: int | None = None

    def __str__(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"


class ApiKeyRoute(BaseModel):
    """``--api-key NAME=UPSTREAM``: the proxy holds the key and adds it to requests for UPSTREAM."""

    model_config = ConfigDict(frozen=True)

    name: str
    upstream: str
    header: str
    value_template: str = "Bearer {key}"

    @property
    def base_url_var(self) -> str:
        stem = re.sub(r"_(API_KEY|KEY|TOKEN)\Z", "", self.name)
        return f"{stem}_BASE_URL"


class EgressPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    mode: NetworkMode
    allow: list[AllowRule] = Field(default_factory=list)
    api_keys: list[ApiKeyRoute] = Field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        """What the run's record keeps: never a key value."""
        return {
            "mode": self.mode,
            "allow": [str(rule) for rule in self.allow],
            "api_keys": {route.name: route.upstream for route in self.api_keys},
        }


def normalise_mode(value: str) -> NetworkMode:
    mode = _MODES.get(value)
    if mode is not None:
        return mode
    raise InvalidInputError(f"network mode {value!r}: choose none, allowlist or open")


def parse_host(text: str, *, what: str) -> str:
    try:
        return check_pattern(text.strip())
    except AddressNotName:
        raise InvalidInputError(
            f"{what} {text!r}: IP addresses are refused; name the host",
            hint="the proxy checks names before any lookup, and addresses after it",
        ) from None
    except BareWildcard:
        raise InvalidInputError(f"{what} {text!r}: a wildcard needs a domain with a dot, e.g. *.example.com") from None
    except ValueError:
        raise InvalidInputError(
            f"{what} {text!r}: not a host name (HOST, or *.SUFFIX for every name under SUFFIX)"
        ) from None


def parse_allow(text: str) -> AllowRule:
    stripped = text.strip()
    if stripped.startswith("[") or _is_ipv6_literal(stripped):
        raise InvalidInputError(f"--allow {text!r}: IP addresses are refused; name the host")
    # Hosts are names, never IPv6 literals (refused above), so the first colon starts the port
    # and everything after it is the port: `host:443:1` is a bad port, not an address.
    host, sep, port_text = stripped.partition(":")
    port: int | None = None
    if sep:
        # isascii: str.isdigit() also accepts digits such as "²" that int() refuses.
        if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
            raise InvalidInputError(
                f"--allow {text!r}: the port must be one number from 1 to 65535 (HOST or HOST:PORT)"
            )
        port = int(port_text)
    return AllowRule(host=parse_host(host, what="--allow"), port=port)


def _is_ipv6_literal(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def parse_api_key(text: str) -> ApiKeyRoute:
    name, sep, upstream = text.partition("=")
    # ASCII: the name becomes a variable's name and part of the route's URL path.
    if not sep or not name.isascii() or not name.isidentifier() or not name.isupper():
        raise InvalidInputError(
            f"--api-key {text!r}: expected NAME=UPSTREAM, e.g. ANTHROPIC_API_KEY=https://api.anthropic.com"
        )
    try:
        host_text, port, path = split_upstream(upstream.strip())
    except ValueError:
        raise InvalidInputError(
            f"--api-key {name}: the upstream must be https://HOST[:PORT][/PATH], not {upstream!r}",
            hint="the proxy adds the key only over TLS",
        ) from None
    host = parse_host(host_text, what=f"--api-key {name} upstream")
    if host.startswith("*."):
        raise InvalidInputError(f"--api-key {name}: the upstream must be one host, not a wildcard")
    header, template = _KEY_HEADERS.get(name, ("authorization", "Bearer {key}"))
    return ApiKeyRoute(
        name=name,
        upstream=f"https://{host}{'' if port == 443 else f':{port}'}{path}",
        header=header,
        value_template=template,
    )


def build_policy(
    mode: str,
    allow: Iterable[str],
    presets: Iterable[str],
    api_keys: Iterable[str],
    custom_presets: Mapping[str, list[str]],
) -> EgressPolicy:
    chosen = normalise_mode(mode)
    rules: list[AllowRule] = []
    for name in presets:
        hosts = custom_presets.get(name) or BUILTIN_PRESETS.get(name)
        if hosts is None:
            known = sorted({*BUILTIN_PRESETS, *custom_presets})
            raise InvalidInputError(f"--preset {name!r}: no such preset", hint=f"known presets: {', '.join(known)}")
        rules.extend(parse_allow(host) for host in hosts)
    rules.extend(parse_allow(entry) for entry in allow)
    routes = [parse_api_key(entry) for entry in api_keys]
    names = [route.name for route in routes]
    if len(set(names)) != len(names):
        raise InvalidInputError(f"--api-key names must be distinct, got {names}")
    if chosen == "none" and (rules or routes):
        raise InvalidInputError(
            "--network none reaches nothing, so --allow, --preset and --api-key have no effect with it",
            hint="use --network allowlist (the default) to reach only the hosts you name",
        )
    return EgressPolicy(mode=chosen, allow=list(dict.fromkeys(rules)), api_keys=routes)


def resolve_key_values(policy: EgressPolicy, environ: Mapping[str, str]) -> dict[str, str]:
    values = {}
    for route in policy.api_keys:
        value = environ.get(route.name)
        if not value:
            raise InvalidInputError(
                f"--api-key {route.name}: no such variable in launcher's environment",
                hint=f"export {route.name} where launcher runs; the agent only ever sees a placeholder",
            )
        # The proxy would ignore the run's whole policy over a value it cannot send as a header.
        if not key_value_ok(route.value_template.format(key=value)):
            raise InvalidInputError(
                f"--api-key {route.name}: the variable's value is not printable ASCII text",
                hint="it is sent as a header's value; look for a stray line break or a non-ASCII character",
            )
        values[route.name] = value
    return values


def policy_document(
    policy: EgressPolicy, run_id: str, subnet: str, key_values: Mapping[str, str], log_name: str
) -> dict[str, Any]:
    """The file the proxy reads (its format is documented in launcher/egress/policy.py)."""
    return {
        "version": 1,
        "run_id": run_id,
        "subnet": subnet,
        "mode": policy.mode,
        "allow": [{"host": rule.host, "port": rule.port} for rule in policy.allow],
        "api_keys": [
            {
                "name": route.name,
                "upstream": route.upstream,
                "header": route.header,
                "value": route.value_template.format(key=key_values[route.name]),
            }
            for route in policy.api_keys
        ],
        "log": log_name,
    }


def agent_environment(policy: EgressPolicy, proxy_ip: str) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """Environment variables and git config entries that send the agent through the proxy."""
    proxy = f"http://{proxy_ip}:{PROXY_PORT}"
    no_proxy = f"localhost,127.0.0.1,::1,{proxy_ip}"
    env = {
        "HTTP_PROXY": proxy,
        "HTTPS_PROXY": proxy,
        # curl reads only the lowercase http_proxy (uppercase HTTP_PROXY is ignored for CGI safety).
        "http_proxy": proxy,
        "https_proxy": proxy,
        "NO_PROXY": no_proxy,
        "no_proxy": no_proxy,
        # Node's built-in fetch ignores proxy variables unless this is set (Node 22.21+/24.5+).
        "NODE_USE_ENV_PROXY": "1",
        "LAUNCHER_EGRESS_PROXY": proxy,
    }
    for route in policy.api_keys:
        env[route.name] = KEY_PLACEHOLDER
        env[route.base_url_var] = f"{proxy}{KEY_ROUTE_PREFIX}/{route.name}"
    git_config: list[tuple[str, str]] = []
    ssh_hosts = {rule.host for rule in policy.allow if rule.port == 22}
    for rule in policy.allow:
        # git over SSH ignores proxy variables; rewrite to HTTPS unless SSH itself is allowed.
        if rule.host.startswith("*.") or rule.host in ssh_hosts or rule.port not in (None, 443):
            continue
        git_config.append((f"url.https://{rule.host}/.insteadOf", f"git@{rule.host}:"))
        git_config.append((f"url.https://{rule.host}/.insteadOf", f"ssh://git@{rule.host}/"))
    return env, git_config


# What a run's record keeps of its network decisions: counts and the most frequent hosts. The
# log itself (one line per decision) stays in the run's folder: a run that tries 50,000 names
# must not make its record, and every line of `launcher ps --json`, megabytes long.
TOP_HOSTS = 20
# Distinct hosts counted one by one; past this many a run's summary counts the rest only in
# its totals, so summarising a hostile log takes bounded memory.
MAX_COUNTED_HOSTS = 100_000


class EgressSummary(BaseModel):
    """What `launcher run --json` says about a run's network traffic."""

    decisions: int = 0
    allowed: list[str] = Field(default_factory=list)
    denied: list[str] = Field(default_factory=list)
    allowed_decisions: int = 0
    denied_decisions: int = 0
    allowed_hosts: int = 0
    denied_hosts: int = 0
    hosts_capped: bool = False
    log: str | None = None


def summarise_decisions(decisions: Iterable[Mapping[str, Any]], log: str | None) -> EgressSummary:
    """Totals, distinct ``host:port`` counts and the TOP_HOSTS most frequent of each kind."""
    counts: dict[bool, Counter[str]] = {True: Counter(), False: Counter()}
    totals = {True: 0, False: 0}
    capped = False
    for line in decisions:
        allowed = line.get("decision") == "allow"
        totals[allowed] += 1
        target = f"{line.get('host')}:{line.get('port')}"
        seen = counts[allowed]
        if target in seen or len(counts[True]) + len(counts[False]) < MAX_COUNTED_HOSTS:
            seen[target] += 1
        else:
            capped = True
    return EgressSummary(
        decisions=totals[True] + totals[False],
        allowed=_most_frequent(counts[True]),
        denied=_most_frequent(counts[False]),
        allowed_decisions=totals[True],
        denied_decisions=totals[False],
        allowed_hosts=len(counts[True]),
        denied_hosts=len(counts[False]),
        hosts_capped=capped,
        log=log,
    )


def _most_frequent(counts: Counter[str]) -> list[str]:
    # Most frequent first; equally frequent ones by name, so the record does not depend on order.
    return [target for target, _ in heapq.nsmallest(TOP_HOSTS, counts.items(), key=lambda item: (-item[1], item[0]))]


def describe_egress(allowed: list[str], denied: list[str], allowed_hosts: int | None, denied_hosts: int | None) -> str:
    """One line for `launcher run`'s report: what a run reached and was refused, never all of it."""

    def part(verb: str, shown: list[str], total: int | None) -> str:
        if not shown:
            return f"{verb} nothing"
        listed = shown[:5]
        more = max(total or len(shown), len(shown)) - len(listed)
        return f"{verb} {', '.join(listed)}" + (f" and {more} more" if more else "")

    return f"{part('reached', allowed, allowed_hosts)}; {part('refused', denied, denied_hosts)}"


# Ranges [network] allow_private may not touch: loopback, "this network", link-local (where the
# cloud metadata services live), the metadata addresses themselves, multicast, reserved, and
# the IPv6 forms that carry an IPv4 address (the proxy judges those by the IPv4 address, so a
# range written that way would never match, or would name loopback in disguise).
_NEVER_PRIVATE: dict[str, str] = {
    "0.0.0.0/8": "this-network addresses",
    "127.0.0.0/8": "loopback",
    "169.254.0.0/16": "link-local (cloud metadata lives there)",
    "169.254.169.254/32": "the cloud metadata address",
    "100.100.100.200/32": "a cloud metadata address",
    "224.0.0.0/4": "multicast",
    "240.0.0.0/4": "reserved addresses",
    "::/128": "the unspecified address",
    "::1/128": "loopback",
    "fe80::/10": "link-local",
    "fd00:ec2::254/128": "the cloud metadata address",
    "ff00::/8": "multicast",
    "::ffff:0:0/96": "IPv4-mapped addresses (write the IPv4 range)",
    "64:ff9b::/96": "NAT64 addresses (write the IPv4 range)",
    "2002::/16": "6to4 addresses (write the IPv4 range)",
}


def check_allow_private(
    ranges: Iterable[str], *, subnet_pool: str
) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """``[network] allow_private`` as networks, or InvalidInputError saying which range is wrong.

    Refused: anything not a CIDR, host bits set, a range overlapping loopback, link-local,
    metadata, multicast or reserved addresses, or the runs' own ``subnet_pool`` (the proxy sits
    on every run's network: an allowed pool would let runs reach each other). The host's own
    addresses inside an allowed range are not refused here: the proxy keeps refusing them
    (``host_addresses`` only says which ones, for the message of ``host_inside``).
    """
    pool = ipaddress.ip_network(subnet_pool, strict=False)
    found: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for text in ranges:
        where = f"[network] allow_private {text!r}"
        try:
            net = ipaddress.ip_network(text.strip(), strict=True)
        except ValueError as exc:
            hint = "write a range such as 10.20.0.0/16"
            if "host bits set" in str(exc):
                hint = f"did you mean {ipaddress.ip_network(text.strip(), strict=False)}?"
            raise InvalidInputError(f"{where} is not a network range", hint=hint) from None
        for never, what in _NEVER_PRIVATE.items():
            other = ipaddress.ip_network(never)
            if net.version == other.version and net.overlaps(other):
                raise InvalidInputError(
                    f"{where} overlaps {other} ({what}), which runs never reach",
                    hint="name only the internal ranges your mirrors are in",
                )
        if net.version == pool.version and net.overlaps(pool):
            raise InvalidInputError(
                f"{where} overlaps the runs' own networks ([network] subnet_pool {pool})",
                hint="choose another subnet_pool, or a narrower range",
            )
        found.append(net)
    return found

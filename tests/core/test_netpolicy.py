"""The egress policy as launcher builds it (pure logic; the proxy's enforcement is tested in
tests/egress, and both end to end in tests/network), and what the proxy reads from it."""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.core.netpolicy import (
    BUILTIN_PRESETS,
    KEY_PLACEHOLDER,
    AllowRule,
    EgressPolicy,
    agent_environment,
    build_policy,
    normalise_mode,
    parse_allow,
    parse_api_key,
    parse_host,
    policy_document,
    resolve_key_values,
    summarise_decisions,
)
from launcher.core.subnets import SubnetPool, lowest_free_slot
from launcher.egress.hostnames import AddressNotName, BareWildcard, HostNameError, check_host, check_pattern
from launcher.egress.policy import ApiKey, allow_reason, parse_policy
from launcher.errors import CapacityError, InvalidInputError


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("pypi.org", AllowRule(host="pypi.org")),
        ("PyPI.org.", AllowRule(host="pypi.org")),
        ("*.github.com", AllowRule(host="*.github.com")),
        ("git.example.com:22", AllowRule(host="git.example.com", port=22)),
        ("allowed.test", AllowRule(host="allowed.test")),
    ],
)
def test_allow_entries_parse_to_rules(text: str, rule: AllowRule) -> None:
    assert parse_allow(text) == rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.0.0.1", "IP addresses are refused"),
        ("2130706433", "IP addresses are refused"),
        ("[::1]", "IP addresses are refused"),
        ("::1", "IP addresses are refused"),
        ("exa mple.com", "not a host name"),
        ("*.com", "a wildcard needs a domain with a dot"),
        ("a.*.example.com", "not a host name"),
        ("example.com:0", "port"),
        ("example.com:http", "port"),
        # Once answered "IP addresses are refused": a host with two colons is a bad port.
        ("x.com:443:1", "the port must be one number from 1 to 65535"),
        ("x.com:\u00b2", "the port must be one number"),
        ("", "not a host name"),
        ("x" * 64 + ".com", "not a host name"),
        # Once accepted here, and then the proxy ignored the run's whole policy over them.
        ("0x7f", "IP addresses are refused"),
        ("host.0X1", "IP addresses are refused"),
        ("\u212a.example.com", "not a host name"),
        ("example.com..", "not a host name"),
    ],
)
def test_bad_allow_entries_are_refused_with_a_reason(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_allow(text)


@given(st.ip_addresses())
def test_no_ip_address_is_ever_an_allow_entry(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> None:
    with pytest.raises(InvalidInputError):
        parse_allow(str(address))


def test_presets_expand_and_custom_presets_win() -> None:
    policy = build_policy("allowlist", ["extra.example"], ["pypi", "mine"], [], {"mine": ["mirror.example"]})
    assert [str(r) for r in policy.allow] == ["pypi.org", "files.pythonhosted.org", "mirror.example", "extra.example"]
    with pytest.raises(InvalidInputError, match=r"known presets: .*pypi"):
        build_policy("allowlist", [], ["nope"], [], {})


def test_bridge_is_open_and_unknown_modes_are_refused() -> None:
    assert normalise_mode("bridge") == "open"
    with pytest.raises(InvalidInputError, match="choose none, allowlist or open"):
        normalise_mode("host")


def test_none_refuses_hosts_it_could_never_reach() -> None:
    with pytest.raises(InvalidInputError, match="no effect"):
        build_policy("none", ["pypi.org"], [], [], {})
    assert build_policy("none", [], [], [], {}).allow == []


def test_api_keys_need_https_and_a_variable_and_never_reach_the_record() -> None:
    route = parse_api_key("ANTHROPIC_API_KEY=https://api.anthropic.com/")
    assert (route.upstream, route.header, route.base_url_var) == (
        "https://api.anthropic.com",
        "x-api-key",
        "ANTHROPIC_BASE_URL",
    )
    openai = parse_api_key("OPENAI_API_KEY=https://api.openai.com/v1")
    assert (openai.header, openai.value_template, openai.upstream) == (
        "authorization",
        "Bearer {key}",
        "https://api.openai.com/v1",
    )
    for bad in (
        "ANTHROPIC_API_KEY=http://api.anthropic.com",
        "lower=https://x.example",
        "NOEQUALS",
        "K=https://1.2.3.4",
        # Before the proxy's rule was shared: a traceback, a silent port 443, a policy the proxy ignored.
        "K=https://x.example:http",
        "K=https://x.example:0",
        "K=https://x.example/v1/@me",
        "K=https://x.example/a b",
        "\u00c4PI_KEY=https://x.example",
    ):
        with pytest.raises(InvalidInputError):
            parse_api_key(bad)
    policy = build_policy("allowlist", [], [], ["ANTHROPIC_API_KEY=https://api.anthropic.com"], {})
    with pytest.raises(InvalidInputError, match="no such variable"):
        resolve_key_values(policy, {})
    values = resolve_key_values(policy, {"ANTHROPIC_API_KEY": "sk-secret"})
    doc = policy_document(policy, "R-1", "10.213.0.0/28", values, "R-1.jsonl")
    assert doc["api_keys"][0]["value"] == "sk-secret"
    assert "sk-secret" not in str(policy.describe())


def test_the_agent_is_pointed_at_the_proxy_and_ssh_remotes_go_over_https() -> None:
    policy = build_policy(
        "allowlist",
        ["forge.example", "ssh.example:22", "ssh.example", "*.wild.example"],
        [],
        ["ANTHROPIC_API_KEY=https://api.anthropic.com"],
        {},
    )
    env, git_config = agent_environment(policy, "10.213.0.2")
    assert env["https_proxy"] == env["HTTPS_PROXY"] == "http://10.213.0.2:3128"
    assert "10.213.0.2" in env["NO_PROXY"].split(",")
    assert env["ANTHROPIC_API_KEY"] == KEY_PLACEHOLDER
    assert env["ANTHROPIC_BASE_URL"] == "http://10.213.0.2:3128/_launcher/keys/ANTHROPIC_API_KEY"
    rewritten = {value for key, value in git_config}
    assert rewritten == {"git@forge.example:", "ssh://git@forge.example/"}, "ssh.example keeps SSH (port 22 allowed)"


def test_decisions_summarise_by_host_and_port() -> None:
    summary = summarise_decisions(
        [
            {"host": "a.example", "port": 443, "decision": "allow"},
            {"host": "a.example", "port": 443, "decision": "allow"},
            {"host": "b.example", "port": 80, "decision": "deny"},
        ],
        "/log",
    )
    assert (summary.decisions, summary.allowed, summary.denied) == (3, ["a.example:443"], ["b.example:80"])


def test_subnet_pool_slots_are_disjoint_and_inside_the_pool() -> None:
    pool = SubnetPool("10.213.0.0/16")
    assert pool.slots == 4096
    first, last = pool.subnet(0), pool.subnet(4095)
    assert (first.cidr, first.gateway, first.proxy_ip) == ("10.213.0.0/28", "10.213.0.1", "10.213.0.2")
    assert last.cidr == "10.213.255.240/28"
    nets = [ipaddress.ip_network(pool.subnet(i).cidr) for i in range(0, 4096, 97)]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1 :])
    for bad in ("10.213.0.0/29", "10.213.0.1/16", "not-a-net", "fd00::/64"):
        with pytest.raises(InvalidInputError):
            SubnetPool(bad)


def test_lowest_free_slot_skips_taken_and_refused_slots() -> None:
    assert lowest_free_slot([0, 1, 3], 8, skip=[2]) == 4
    with pytest.raises(CapacityError):
        lowest_free_slot([0, 1], 2)


def test_an_upstream_is_recorded_as_the_proxy_will_read_it() -> None:
    assert parse_api_key("K= HTTPS://API.Example:443/v1/").upstream == "https://api.example/v1"
    assert parse_api_key("K=https://api.example:8443").upstream == "https://api.example:8443"
    with pytest.raises(InvalidInputError, match="IP addresses are refused"):
        parse_api_key("K=https://[::1]:8443")
    with pytest.raises(InvalidInputError, match="one host, not a wildcard"):
        parse_api_key("K=https://*.example.com")


@pytest.mark.parametrize("value", ["sk-1\n", "sk-\u00e9", "a\tb"])
def test_a_key_value_the_proxy_could_not_send_is_refused_before_the_run(value: str) -> None:
    policy = build_policy("allowlist", [], [], ["K_API_KEY=https://api.example"], {})
    with pytest.raises(InvalidInputError, match="not printable ASCII") as raised:
        resolve_key_values(policy, {"K_API_KEY": value})
    assert value not in str(raised.value)


# ---------------------------------------------------------------- one rule for the launcher and the proxy


def mostly(usual: st.SearchStrategy[str], unusual: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """usual three times in four: a policy is built only when every one of its parts is good."""
    return st.one_of(usual, usual, usual, unusual)


# What users type (case, spaces, trailing dots, wildcards, ports), and now and then anything at
# all, so that both accepting and refusing are well exercised.
GOOD_NAMES = st.builds(
    lambda labels, top, wildcard, dot: ("*." if wildcard and labels else "") + ".".join([*labels, top]) + dot,
    st.lists(st.from_regex(r"\A[a-zA-Z0-9_](?:[a-zA-Z0-9_-]{0,8}[a-zA-Z0-9_])?\Z"), max_size=3),
    st.sampled_from(["test", "com", "Example", "io", "x" * 63]),
    st.booleans(),
    st.sampled_from(["", "", "."]),
)
LABELS = st.from_regex(r"\A[a-zA-Z0-9_-]{1,12}\Z") | st.sampled_from(["0x7f", "0X1", "127", "xn--bcher-kva", "a" * 63])
NOISY_HOSTS = st.one_of(
    st.lists(LABELS, min_size=1, max_size=4).map(".".join),
    GOOD_NAMES.map(lambda name: name + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 60),  # near the length limits
    st.text(alphabet="0123456789abcdefxX.-_*:[] ", max_size=20),
    st.text(max_size=20),
)
HOSTS = mostly(GOOD_NAMES, NOISY_HOSTS)
SPACES = st.sampled_from(["", "", " ", "\t"])
GOOD_PORTS, BAD_PORTS = st.sampled_from(["", "", "", ":22", ":443", ":8443"]), st.sampled_from([":0", ":65536", ":x"])
ALLOW_ENTRIES = mostly(
    st.builds(lambda space, host, port: f"{space}{host}{port}{space}", SPACES, GOOD_NAMES, GOOD_PORTS),
    st.builds(lambda space, host, port: f"{space}{host}{port}{space}", SPACES, HOSTS, GOOD_PORTS | BAD_PORTS),
)
SCHEMES = st.sampled_from(["https://", "HTTPS://", " https://"])
PATHS, BAD_PATHS = st.sampled_from(["", "/", "/v1", "/v1/", "//v1", "/a%20b"]), st.sampled_from(["/a b", "/a@b", "/?q"])
UPSTREAMS = mostly(
    st.builds(
        lambda *parts: "".join(parts), SCHEMES, GOOD_NAMES.filter(lambda name: "*" not in name), GOOD_PORTS, PATHS
    ),
    st.builds(
        lambda *parts: "".join(parts),
        SCHEMES | st.sampled_from(["http://", ""]),
        HOSTS,
        GOOD_PORTS | BAD_PORTS,
        PATHS | BAD_PATHS | st.sampled_from(["/#f", "/\u00e9"]),
    )
    | st.text(max_size=40),
)
KEY_NAMES = ["ANTHROPIC_API_KEY", "OPENAI_API_KEY", "K", "lower", "\u00c4PI_KEY"]
API_KEYS = st.lists(
    st.tuples(mostly(st.sampled_from(KEY_NAMES[:3]), st.sampled_from(KEY_NAMES[3:])), UPSTREAMS),
    max_size=2,
    unique_by=lambda key: key[0],
).map(lambda keys: [f"{name}={upstream}" for name, upstream in keys])
KEY_VALUES = mostly(st.from_regex(r"\A[ -~]{1,24}\Z"), st.text(max_size=12))


@pytest.mark.slow
@settings(max_examples=1000)
@given(HOSTS | ALLOW_ENTRIES)
def test_the_launcher_and_the_proxy_judge_host_names_alike(text: str) -> None:
    try:
        expected: str | type[HostNameError] = check_pattern(text.strip())
    except HostNameError as exc:
        expected = type(exc)
    if isinstance(expected, str):
        assert parse_host(text, what="--allow") == expected
        return
    message = {
        AddressNotName: "IP addresses are refused; name the host",
        BareWildcard: "a wildcard needs a domain with a dot",
        HostNameError: "not a host name (HOST, or *.SUFFIX",
    }
    with pytest.raises(InvalidInputError) as raised:
        parse_host(text, what="--allow")
    assert str(raised.value).startswith(f"--allow {text!r}: {message[expected]}")
    assert (raised.value.hint is not None) == (expected is AddressNotName)


def host_allows(policy: EgressPolicy, name: str, port: int) -> bool:
    """The rule as launcher documents it (netpolicy.AllowRule): exact, or strictly under *.SUFFIX."""
    if policy.mode == "open":
        return True
    for rule in policy.allow:
        ports = (80, 443) if rule.port is None else (rule.port,)
        under = rule.host.startswith("*.") and name.endswith(rule.host[1:])
        if port in ports and (under or name == rule.host):
            return True
    return False


@settings(max_examples=500)
@given(
    mode=st.sampled_from(["allowlist", "open", "bridge", "none"]),
    allow=st.lists(ALLOW_ENTRIES, max_size=3),
    presets=st.lists(st.sampled_from([*BUILTIN_PRESETS, "mine"]), max_size=2),
    custom=st.lists(ALLOW_ENTRIES, min_size=1, max_size=3),
    api_keys=API_KEYS,
    environ=st.fixed_dictionaries({name: KEY_VALUES for name in KEY_NAMES}),
)
@pytest.mark.slow
def test_every_policy_the_launcher_builds_is_the_policy_the_proxy_reads(
    mode: str,
    allow: list[str],
    presets: list[str],
    custom: list[str],
    api_keys: list[str],
    environ: dict[str, str],
) -> None:
    try:
        policy = build_policy(mode, allow, presets, api_keys, {"mine": custom})
        values = resolve_key_values(policy, environ)
    except InvalidInputError:
        return
    if policy.mode == "none":
        return  # no network, no proxy, no policy file
    document = policy_document(policy, "R-7", "10.213.0.16/28", values, "R-7.jsonl")
    # As EgressFiles.write_policy writes it and the proxy's PolicyStore reads it.
    read = parse_policy(json.loads(json.dumps(document, indent=1)))

    assert (read.run_id, str(read.subnet), read.mode, read.log) == ("R-7", "10.213.0.16/28", policy.mode, "R-7.jsonl")
    assert [(rule.host, rule.port) for rule in read.allow] == [(rule.host, rule.port) for rule in policy.allow]
    routes = {}
    for route in policy.api_keys:
        parts = urlsplit(route.upstream)
        assert parts.hostname is not None
        value = route.value_template.format(key=environ[route.name])
        routes[route.name] = ApiKey(route.name, parts.hostname, parts.port or 443, parts.path, route.header, value)
    assert read.api_keys == routes

    for rule in policy.allow:
        name = rule.host.removeprefix("*.")
        probes = [f"x.{name}", name, f"evil{name}"] if rule.host.startswith("*.") else [name, f"x.{name}"]
        assert check_host(probes[0]) == probes[0], "a name the rule is for is not a name to the proxy"
        for probe in probes:
            try:
                check_host(probe)
            except HostNameError:
                continue  # refused before any rule is consulted
            for port in (80, 443, 22, 8443):
                proxy = allow_reason(probe, port, read.mode, read.allow) is not None
                assert proxy == host_allows(policy, probe, port), (probe, port)


@pytest.mark.slow
@settings(max_examples=500)
@given(st.sampled_from(KEY_NAMES[:3]), UPSTREAMS, KEY_VALUES)
def test_every_api_key_route_the_launcher_accepts_is_the_route_the_proxy_reads(
    name: str, upstream: str, value: str
) -> None:
    try:
        policy = build_policy("allowlist", [], [], [f"{name}={upstream}"], {})
        values = resolve_key_values(policy, {name: value})
    except InvalidInputError:
        return
    (route,) = policy.api_keys
    read = parse_policy(policy_document(policy, "R-7", "10.213.0.16/28", values, "R-7.jsonl"))
    parts = urlsplit(upstream.strip())  # the URL the user gave, as the standard library reads it
    assert parts.hostname is not None
    key = read.api_keys[name]
    host, path = parts.hostname.removesuffix("."), parts.path.rstrip("/")
    assert (key.host, key.port, key.base_path) == (host, parts.port or 443, path)
    assert (key.header, key.value) == (route.header, route.value_template.format(key=value))

"""The egress policy as launcher builds it (pure logic; the proxy's enforcement is tested in
tests/egress, and both end to end in tests/network)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.core.netpolicy import (
    KEY_PLACEHOLDER,
    AllowRule,
    agent_environment,
    build_policy,
    normalise_mode,
    parse_allow,
    parse_api_key,
    policy_document,
    resolve_key_values,
    summarise_decisions,
)
from launcher.core.subnets import SubnetPool, lowest_free_slot
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
        ("", "not a host name"),
        ("x" * 64 + ".com", "not a host name"),
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

"""Policy files as the proxy reads them: allow rules, API-key routes, and what makes it ignore a file."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.egress.policy import AllowRule, ApiKey, allow_reason, parse_policy

SECRET = "sk-test-SECRET-0123456789"


def document(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": 1, "run_id": "R", "subnet": "10.0.0.0/28", "mode": "allowlist"}
    return {**doc, **overrides}


def test_allow_rule_ports() -> None:
    rules = [AllowRule("web.test", None), AllowRule("git.test", 22), AllowRule("*.x.test", 8443)]
    assert allow_reason("web.test", 80, "allowlist", rules) == "allowlist web.test"
    assert allow_reason("web.test", 443, "allowlist", rules) == "allowlist web.test"
    assert allow_reason("web.test", 22, "allowlist", rules) is None
    assert allow_reason("git.test", 22, "allowlist", rules) == "allowlist git.test:22"
    assert allow_reason("git.test", 443, "allowlist", rules) is None
    assert allow_reason("a.x.test", 8443, "allowlist", rules) == "allowlist *.x.test:8443"
    assert allow_reason("x.test", 8443, "allowlist", rules) is None
    assert allow_reason("any.test", 5, "open", []) == "open"


def test_parse_policy_never_repeats_a_key_value_in_its_errors() -> None:
    doc = {
        "version": 1,
        "run_id": "R",
        "subnet": "10.0.0.0/28",
        "mode": "open",
        "api_keys": [{"name": "K", "upstream": "http://plain.test", "header": "x-api-key", "value": SECRET}],
    }
    with pytest.raises(ValueError) as raised:
        parse_policy(doc)
    assert SECRET not in str(raised.value)
    assert SECRET not in repr(ApiKey("K", "h.test", 443, "", "x-api-key", SECRET))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=20,
)


@settings(max_examples=300)
@given(
    st.fixed_dictionaries(
        {"version": st.just(1), "run_id": st.just("R"), "subnet": st.sampled_from(["10.0.0.0/28", "x", "::/0"])},
        optional={
            "mode": st.sampled_from(["open", "allowlist", "none"]),
            "allow": st.lists(
                st.fixed_dictionaries({"host": st.text(max_size=20) | st.just("*.ok.test"), "port": JSON_VALUES})
                | JSON_VALUES,
                max_size=3,
            ),
            "api_keys": st.lists(
                st.fixed_dictionaries(
                    {"name": JSON_VALUES, "upstream": st.text(max_size=30), "header": JSON_VALUES, "value": JSON_VALUES}
                )
                | JSON_VALUES,
                max_size=2,
            ),
            "log": JSON_VALUES,
        },
    )
    | JSON_VALUES
)
@pytest.mark.slow
def test_parse_policy_only_ever_raises_value_error(doc: object) -> None:
    try:
        policy = parse_policy(doc)
    except ValueError:
        return
    assert policy.mode in ("allowlist", "open")
    assert policy.log is None or ("/" not in policy.log and ".." not in policy.log)


def test_a_policy_reads_into_normalised_rules_and_routes() -> None:
    policy = parse_policy(
        document(
            allow=[{"host": "PyPI.org.", "port": None}, {"host": "*.GitHub.com", "port": 22}],
            api_keys=[
                {"name": "K", "upstream": "https://API.test:8443/v1/", "header": "x-api-key", "value": SECRET},
                {"name": "L", "upstream": "HTTPS://api.test", "header": "authorization", "value": "Bearer x"},
            ],
            log="R.jsonl",
        )
    )
    assert policy.allow == (AllowRule("pypi.org", None), AllowRule("*.github.com", 22))
    assert policy.api_keys == {
        "K": ApiKey("K", "api.test", 8443, "/v1", "x-api-key", SECRET),
        "L": ApiKey("L", "api.test", 443, "", "authorization", "Bearer x"),
    }
    assert policy.api_keys["K"].authority == "api.test:8443"
    assert policy.log == "R.jsonl"


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("-dash.test", "allow[0].host: not a valid host name"),
        ("*.com", "allow[0].host: a wildcard needs a domain with a dot"),
        ("0x7f", "allow[0].host: IP addresses are refused"),
        ("*.10.0.0.1", "allow[0].host: IP addresses are refused"),
    ],
)
def test_an_allow_entry_that_is_no_pattern_makes_the_file_unreadable(host: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_policy(document(allow=[{"host": host, "port": None}]))


@pytest.mark.parametrize(
    ("upstream", "reason"),
    [
        ("https://api.test/a b", "api_keys[0].upstream: not https://"),
        ("https://api.test/\u20ac", "api_keys[0].upstream: not https://"),
        ("https://api.test/?q", "api_keys[0].upstream: not https://"),
        ("https://1.2.3.4", "api_keys[0].upstream: IP addresses are refused"),
        ("https://*.api.test", "api_keys[0].upstream: not a valid host name"),
        ("https://api.test:0", "api_keys[0].upstream: the port must be"),
    ],
)
def test_an_upstream_the_proxy_could_not_send_to_makes_the_file_unreadable(upstream: str, reason: str) -> None:
    key = {"name": "K", "upstream": upstream, "header": "x-api-key", "value": SECRET}
    with pytest.raises(ValueError, match=re.escape(reason)) as raised:
        parse_policy(document(api_keys=[key]))
    assert SECRET not in str(raised.value)


@pytest.mark.parametrize("value", ["", "line\nbreak", "tab\t", "caf\u00e9"])
def test_a_key_value_that_is_no_header_value_makes_the_file_unreadable(value: str) -> None:
    key = {"name": "K", "upstream": "https://api.test", "header": "x-api-key", "value": value}
    with pytest.raises(ValueError, match="printable ASCII"):
        parse_policy(document(api_keys=[key]))

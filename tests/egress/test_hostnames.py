"""The one host-name rule: what the proxy and the launcher accept as a name, an allow pattern, an upstream."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.egress.hostnames import (
    AddressNotName,
    BareWildcard,
    HostNameError,
    check_host,
    check_pattern,
    pattern_covers,
    split_authority,
    split_upstream,
)

# Text that is often almost a number or almost a name: where the two are easiest to confuse.
NEAR_NAMES = st.text(alphabet="0123456789abcdefxX.-_*:[]", max_size=40)
TEXTS = st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1")), NEAR_NAMES)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("PyPI.org.", "pypi.org"),
        ("a_b-c.example", "a_b-c.example"),
        ("x" * 63 + ".test", "x" * 63 + ".test"),
        ("localhost", "localhost"),
    ],
)
def test_host_names_are_normalised(host: str, expected: str) -> None:
    assert check_host(host) == expected


@pytest.mark.parametrize(
    "host",
    [
        *("", ".", "a..b", "x" * 64 + ".test", ("a" * 60 + ".") * 5, "a b", "ex*ample.com", "bücher.de", "\u212a.test"),
        *("1.2.3.4", "[::1]", "::1", "2130706433", "0x7f.1", "127.1", "example.123", "0X7F", "host.0x1"),
    ],
)
def test_invalid_and_numeric_hosts_are_rejected(host: str) -> None:
    with pytest.raises(ValueError):
        check_host(host)


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: b.decode("latin-1"))))
def test_host_validator_only_ever_raises_value_error(text: str) -> None:
    try:
        name = check_host(text)
    except ValueError:
        return
    assert name == name.lower()
    assert 0 < len(name) <= 253
    assert not name.rsplit(".", 1)[-1].isdigit()
    with pytest.raises(ValueError):
        ipaddress.ip_address(name)


@pytest.mark.parametrize("host", ["-dash.test", "dash-.test", "a.-b.test", "a.b-", "-"])
def test_labels_never_start_or_end_with_a_dash(host: str) -> None:
    with pytest.raises(HostNameError, match="not a valid host name"):
        check_host(host)


@pytest.mark.parametrize(
    "host", ["1.2.3.4", "[::1]", "::1", "2130706433", "0x7f.1", "127.1", "0X7F", "host.0x1", "0x", "1.2.3.4."]
)
def test_address_forms_are_told_apart_from_bad_names(host: str) -> None:
    with pytest.raises(AddressNotName, match="IP addresses are refused"):
        check_host(host)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("*.GitHub.com.", "*.github.com"),
        ("*.a.b.c", "*.a.b.c"),
        ("pypi.org", "pypi.org"),
        (
            "*." + "a" * 61 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
            "*." + "a" * 61 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,
        ),
    ],
)
def test_patterns_are_names_or_wildcards_over_a_dotted_suffix(text: str, expected: str) -> None:
    assert check_pattern(text) == expected


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("*.com", BareWildcard),
        ("*.com.", BareWildcard),
        ("*.1.2", AddressNotName),
        ("*.example.0x1", AddressNotName),
        ("a.*.example.com", HostNameError),
        ("*", HostNameError),
        ("*.", HostNameError),
        ("*.*.example.com", HostNameError),
        ("**.example.com", HostNameError),
        # A suffix so long that no name under it is a name.
        ("*." + "a" * 62 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61, HostNameError),
    ],
)
def test_bad_patterns_are_refused_with_their_kind(text: str, error: type[HostNameError]) -> None:
    with pytest.raises(error):
        check_pattern(text)


def test_a_wildcard_covers_names_under_its_suffix_only() -> None:
    assert pattern_covers("*.wild.test", "a.wild.test")
    assert pattern_covers("*.wild.test", "a.b.wild.test")
    assert not pattern_covers("*.wild.test", "wild.test")
    assert not pattern_covers("*.wild.test", "evilwild.test")
    assert pattern_covers("exact.test", "exact.test")
    assert not pattern_covers("exact.test", "a.exact.test")


@settings(max_examples=1000)
@given(TEXTS)
def test_pattern_validator_only_ever_raises_host_name_errors_and_is_idempotent(text: str) -> None:
    try:
        pattern = check_pattern(text)
    except HostNameError:
        return
    assert check_pattern(pattern) == pattern
    name = pattern.removeprefix("*.")
    assert check_host(name) == name
    if pattern.startswith("*."):
        assert "." in name
        assert check_host(f"x.{name}") == f"x.{name}"  # some name under the suffix is a name


@settings(max_examples=1000)
@given(TEXTS)
def test_no_accepted_name_is_a_numeric_host_to_the_system_resolver(text: str) -> None:
    try:
        name = check_host(text)
    except HostNameError:
        return
    # AI_NUMERICHOST: the libc parser that reads 127.1 and 0x7f.1 as addresses, without any lookup.
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo(name, None, flags=socket.AI_NUMERICHOST)
    with pytest.raises(OSError):
        socket.inet_aton(name)


@pytest.mark.parametrize(
    ("text", "default", "expected"),
    [
        ("pypi.org", 80, ("pypi.org", 80)),
        ("pypi.org:8080", 80, ("pypi.org", 8080)),
        ("[::1]:443", None, ("[::1]", 443)),
        ("[::1]", 80, ("[::1]", 80)),
        ("::1", 80, ("::1", 80)),  # not host:port; check_host refuses it as an address
    ],
)
def test_authorities_split_into_host_and_port(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_authority(text, default) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("pypi.org", "the port is missing"),
        (":443", "the host is missing"),
        ("pypi.org:0", "from 1 to 65535"),
        ("pypi.org:65536", "from 1 to 65535"),
        ("pypi.org:\u0663", "from 1 to 65535"),
        ("[::1", "malformed"),
        ("[::1]x", "malformed"),
    ],
)
def test_bad_authorities_are_refused(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        split_authority(text, None)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://api.anthropic.com", ("api.anthropic.com", 443, "")),
        ("https://api.anthropic.com/", ("api.anthropic.com", 443, "")),
        ("HTTPS://API.test:8443/v1/", ("API.test", 8443, "/v1")),
        ("https://api.test/a/b%20c", ("api.test", 443, "/a/b%20c")),
        ("https://[::1]:8443", ("[::1]", 8443, "")),
    ],
)
def test_upstreams_split_into_host_port_and_base_path(url: str, expected: tuple[str, int, str]) -> None:
    assert split_upstream(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        *("http://api.test", "api.test", "https://", "https:///v1", "https://api.test:0", "https://api.test:x"),
        *("https://u@api.test", "https://api.test/a@b", "https://api.test/?", "https://api.test/#f"),
        *("https://api.test/a b", "https://api.test/\u00e9", "https://api.test/\t", " https://api.test"),
    ],
)
def test_bad_upstreams_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        split_upstream(url)


@settings(max_examples=500)
@given(st.text(max_size=60), st.sampled_from(["https://", "HTTPS://", "http://", ""]))
def test_an_upstream_split_puts_back_together_as_the_same_route(rest: str, scheme: str) -> None:
    try:
        host, port, path = split_upstream(scheme + rest)
    except ValueError:
        return
    assert all(" " < c < "\x7f" and c not in "?#@" for c in host + path)
    assert path == "" or (path.startswith("/") and not path.endswith("/"))
    authority = host if port == 443 else f"{host}:{port}"
    assert split_upstream(f"https://{authority}{path}") == (host, port, path)

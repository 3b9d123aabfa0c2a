"""Host names, allow patterns and authorities: the one rule both sides of egress apply.

The proxy judges request targets and policy files by it; launcher.core.netpolicy judges
``--allow``, presets, ``[network].allow`` and ``--api-key`` upstreams by it. So every name the
launcher writes into a policy is one the proxy reads, and no name that a resolver would read as
an address gets past either.
"""

from __future__ import annotations

import re

MAX_NAME = 253
# No dash at either end of a label: such names are not host names, and the launcher never
# accepted them, so the proxy must not either.
_LABEL = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")


class HostNameError(ValueError):
    """Not a host name; the message says why and never repeats the text."""


class AddressNotName(HostNameError):
    """An IP literal, or a name a resolver would read as an address."""


class BareWildcard(HostNameError):
    """``*.SUFFIX`` where SUFFIX has no dot, which would cover a whole top-level domain."""


def check_host(host: str) -> str:
    """The host name normalised (lower case, no trailing dot), or HostNameError.

    IP literals, and numeric forms the resolver would read as addresses (``2130706433``,
    ``0x7f.1``, ``127.1``), raise AddressNotName so that only names reach the allowlist and the
    lookup.
    """
    # Checked before lower(): "\u212a".lower() is an ASCII "k".
    if not host.isascii():
        raise HostNameError("not a valid host name")
    name = host.lower().removesuffix(".")
    if name.startswith("[") or ":" in name:
        raise AddressNotName("IP addresses are refused; name the host")
    if not name or len(name) > MAX_NAME or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise HostNameError("not a valid host name")
    last = name.rsplit(".", 1)[-1]
    if last.isdigit() or _HEX_NUMBER.fullmatch(last):
        raise AddressNotName("IP addresses are refused; name the host")
    return name


def check_pattern(text: str) -> str:
    """An allow entry's host normalised: a name, or ``*.SUFFIX`` for every name under SUFFIX."""
    if not text.startswith("*."):
        return check_host(text)
    suffix = check_host(text[2:])
    if "." not in suffix:
        raise BareWildcard("a wildcard needs a domain with a dot, e.g. *.example.com")
    if len(suffix) > MAX_NAME - 2:  # then no name under it would be a valid name
        raise HostNameError("not a valid host name")
    return f"*.{suffix}"


def pattern_covers(pattern: str, name: str) -> bool:
    """Whether the normalised pattern (from check_pattern) covers the normalised name."""
    return name.endswith(pattern[1:]) if pattern.startswith("*.") else name == pattern


def split_authority(text: str, default_port: int | None) -> tuple[str, int]:
    """``host[:port]`` (host may be a bracketed IPv6 literal, refused later by check_host)."""
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (text[end + 1 :] and not text[end + 1 :].startswith(":")):
            raise ValueError("malformed host:port")
        host, port_text = text[: end + 1], text[end + 2 :] or None
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host = text
    if not host:
        raise ValueError("the host is missing")
    if not port_text:
        if default_port is None:
            raise ValueError("the port is missing")
        return host, default_port
    if not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5 and 0 < int(port_text) < 65536):
        raise ValueError("the port must be a number from 1 to 65535")
    return host, int(port_text)


def split_upstream(url: str) -> tuple[str, int, str]:
    """``https://HOST[:PORT][/PATH]`` as (HOST as written, PORT or 443, PATH without a trailing /).

    ValueError unless the URL is printable ASCII without spaces, and without a user name, a
    query or a fragment: the path starts every request target the proxy sends upstream. HOST
    is for check_host to judge.
    """
    if url[:8].lower() != "https://" or any(c in url for c in "?#@") or not all(" " < c < "\x7f" for c in url):
        raise ValueError("not https://host[:port][/path]")
    authority, _, path = url[8:].partition("/")
    host, port = split_authority(authority, 443)
    return host, port, f"/{path}".rstrip("/")

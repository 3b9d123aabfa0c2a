"""Reading the server name from a TLS ClientHello: real hellos, split ones, and anything else."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from egress_kit import client_hello
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.egress.tls import client_hello_message, parse_client_hello, read_client_hello


def test_sni_is_read_from_a_real_client_hello() -> None:
    assert parse_client_hello(client_hello("Tls.Test")) == "Tls.Test"
    assert parse_client_hello(client_hello(None)) is None


def test_sni_is_read_from_a_client_hello_split_over_records() -> None:
    hello = client_hello("split.test")
    message = hello[5 : 5 + int.from_bytes(hello[3:5], "big")]
    records = b"".join(b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part for part in (message[:40], message[40:]))
    assert client_hello_message(records[:-1]) is None  # incomplete: read more
    assert parse_client_hello(records) == "split.test"


def test_non_handshake_bytes_are_not_a_client_hello() -> None:
    with pytest.raises(ValueError):
        parse_client_hello(b"\x17\x03\x03\x00\x05hello")
    with pytest.raises(ValueError):
        parse_client_hello(client_hello("x.test")[:-1])


@settings(max_examples=500)
@given(st.binary(max_size=2048))
def test_sni_parser_only_ever_raises_value_error_on_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(ValueError):
        parse_client_hello(data)


HELLO = client_hello("fuzz.test")


@settings(max_examples=500)
@given(st.integers(0, len(HELLO) - 1), st.integers(0, 255), st.integers(0, len(HELLO)))
def test_sni_parser_only_ever_raises_value_error_on_mangled_hellos(at: int, byte: int, cut: int) -> None:
    mangled = (HELLO[:at] + bytes([byte]) + HELLO[at + 1 :])[:cut]
    try:
        name = parse_client_hello(mangled)
    except ValueError:
        return
    assert name is None or isinstance(name, str)


def read_hello(first: bytes, rest: list[bytes]) -> tuple[bytes, str | None]:
    async def go() -> tuple[bytes, str | None]:
        reader = asyncio.StreamReader()
        for part in rest:
            reader.feed_data(part)
        reader.feed_eof()
        return await read_client_hello(reader, first)

    return asyncio.run(go())


RECORD = b"\x16\x03\x01\x40\x00" + bytes(0x4000)


def test_a_hello_is_read_on_until_complete_and_nothing_read_is_lost() -> None:
    hello = client_hello("more.test")
    assert read_hello(hello[:3], [hello[3:10], hello[10:] + b"after"]) == (hello + b"after", "more.test")


@pytest.mark.parametrize(
    ("first", "rest", "reason"),
    [
        (client_hello("x.test")[:20], [], "client closed during the ClientHello"),
        # A hello that claims 16 MiB must not make the proxy buffer it all.
        (RECORD[:5] + b"\x01\xff\xff\xff" + RECORD[9:], [RECORD] * 5, "larger than 64 KiB"),
    ],
)
def test_a_hello_that_never_completes_is_refused(first: bytes, rest: list[bytes], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        read_hello(first, rest)

"""The server name a TLS ClientHello asks for, read from the bytes a CONNECT client sends first.

Every parser here raises ValueError, and only ValueError, on any input it cannot read.
"""

from __future__ import annotations

import asyncio

MAX_HELLO = 64 * 1024


def _field(data: bytes, pos: int, size_len: int) -> tuple[bytes, int]:
    """The length-prefixed field at pos, and the position after it."""
    start = pos + size_len
    if start > len(data):
        raise ValueError("truncated TLS field")
    end = start + int.from_bytes(data[pos:start], "big")
    if end > len(data):
        raise ValueError("truncated TLS field")
    return data[start:end], end


def client_hello_message(data: bytes) -> bytes | None:
    """The ClientHello handshake message reassembled from the TLS records data starts with.

    None while more bytes are needed; ValueError when data is not a TLS handshake.
    """
    message = bytearray()
    pos = 0
    while True:
        if message and message[0] != 1:
            raise ValueError("first TLS handshake message is not a ClientHello")
        if len(message) >= 4 and len(message) >= 4 + int.from_bytes(message[1:4], "big"):
            return bytes(message[: 4 + int.from_bytes(message[1:4], "big")])
        if len(data) - pos < 5:
            return None
        if data[pos] != 0x16 or data[pos + 1] != 3:
            raise ValueError("not a TLS handshake record")
        length = int.from_bytes(data[pos + 3 : pos + 5], "big")
        if not 0 < length <= 1 << 14:
            raise ValueError("bad TLS record length")
        if len(data) - pos - 5 < length:
            return None
        message += data[pos + 5 : pos + 5 + length]
        pos += 5 + length


def server_name(hello: bytes) -> str | None:
    """The SNI host_name of a ClientHello message (as client_hello_message returns), None without one."""
    body, _ = _field(hello, 1, 3)
    pos = 2 + 32  # client_version, random
    if len(body) < pos:
        raise ValueError("truncated ClientHello")
    _, pos = _field(body, pos, 1)  # session_id
    _, pos = _field(body, pos, 2)  # cipher_suites
    _, pos = _field(body, pos, 1)  # compression_methods
    if pos == len(body):
        return None
    extensions, _ = _field(body, pos, 2)
    pos = 0
    while pos < len(extensions):
        if pos + 2 > len(extensions):
            raise ValueError("truncated TLS extension")
        kind = int.from_bytes(extensions[pos : pos + 2], "big")
        data, pos = _field(extensions, pos + 2, 2)
        if kind == 0:  # server_name
            names, _ = _field(data, 0, 2)
            at = 0
            while at < len(names):
                name_type = names[at]
                name, at = _field(names, at + 1, 2)
                if name_type == 0:  # host_name
                    return name.decode("ascii")
            return None
    return None


def parse_client_hello(data: bytes) -> str | None:
    """The SNI of the ClientHello that data starts with; ValueError if incomplete or malformed."""
    hello = client_hello_message(data)
    if hello is None:
        raise ValueError("incomplete ClientHello")
    return server_name(hello)


async def read_client_hello(reader: asyncio.StreamReader, first: bytes) -> tuple[bytes, str | None]:
    """Everything read until the ClientHello that first starts is complete, and its SNI."""
    data = first
    while (hello := client_hello_message(data)) is None:
        if len(data) >= MAX_HELLO:
            raise ValueError("ClientHello larger than 64 KiB")
        more = await reader.read(MAX_HELLO)
        if not more:
            raise ValueError("client closed during the ClientHello")
        data += more
    return data, server_name(hello)

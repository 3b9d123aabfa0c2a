"""HTTP/1 as the proxy speaks it: one request head in, one body forwarded, one answer back.

The parsers are strict where a lenient reading could let the client and the upstream see two
different requests in the same bytes (request smuggling), and raise ValueError for anything
they refuse.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass

from .tokens import TOKEN

MAX_HEAD = 64 * 1024
CHUNK = 64 * 1024
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}
)
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"})
# A client's Connection header cannot drop these: without them the upstream would frame the body
# the proxy forwards differently (Host is replaced anyway).
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3})[ \r\n]")
_PHRASES = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}


@dataclass
class Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]

    def values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name]


def parse_head(data: bytes) -> Request:
    """A request head ending in CRLF CRLF; ValueError if malformed."""
    lines = data.decode("latin-1").split("\r\n")
    while lines and not lines[0]:  # stray CRLFs before a request line are allowed
        lines.pop(0)
    if len(lines) < 3 or lines[-2:] != ["", ""]:
        raise ValueError("malformed request head")
    parts = lines[0].split(" ")
    if len(parts) != 3:
        raise ValueError("malformed request line")
    method, target, version = parts
    if not TOKEN.fullmatch(method) or version not in ("HTTP/1.0", "HTTP/1.1") or not target:
        raise ValueError("malformed request line")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in target):
        raise ValueError("malformed request target")
    headers = []
    for line in lines[1:-2]:
        name, sep, value = line.partition(":")
        if not sep or not TOKEN.fullmatch(name) or any(ch in value for ch in "\r\n\0"):
            raise ValueError("malformed header line")
        headers.append((name, value.strip(" \t")))
    return Request(method, target, version, headers)


def split_url(url: str) -> tuple[str, str]:
    """``http://authority/path?query`` as (authority, origin-form target)."""
    rest = url[len("http://") :]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].split("#", 1)[0]
    if "@" in authority:
        raise ValueError("user names in proxied URLs are not supported")
    return authority, path if path.startswith("/") else f"/{path}"


def body_framing(request: Request) -> int | None:
    """The body's length: a byte count, None for chunked; ValueError when it is ambiguous."""
    codings = [c.strip().lower() for v in request.values("transfer-encoding") for c in v.split(",")]
    lengths = {v.strip() for value in request.values("content-length") for v in value.split(",")}
    if codings:
        if codings != ["chunked"]:
            raise ValueError("only Transfer-Encoding: chunked is supported")
        if lengths:
            raise ValueError("both Content-Length and Transfer-Encoding")
        return None
    if not lengths:
        return 0
    if len(lengths) > 1 or not all(v.isascii() and v.isdigit() and len(v) <= 18 for v in lengths):
        raise ValueError("malformed Content-Length")
    return int(lengths.pop())


async def forward_chunked(reader: asyncio.StreamReader, send: Callable[[bytes], Awaitable[None]]) -> None:
    """Pass a chunked body through as it came, up to the last chunk and trailers, and nothing after.

    ValueError on malformed framing, asyncio.IncompleteReadError when the body is cut short,
    asyncio.LimitOverrunError on a line longer than the reader's limit; after any of them the
    caller must not let the upstream act on what was sent.
    """
    while True:
        line = await reader.readuntil(b"\r\n")
        size_text = line[:-2].split(b";", 1)[0].strip(b" \t")
        # A bare CR or LF could end the line for the upstream where it does not for the proxy.
        if (
            b"\r" in line[:-2]
            or b"\n" in line[:-2]
            or not size_text
            or len(size_text) > 16
            or size_text.strip(b"0123456789abcdefABCDEF")
        ):
            raise ValueError("malformed chunk size")
        await send(line)
        size = int(size_text, 16)
        if size == 0:
            break
        while size:
            data = await reader.read(min(size, CHUNK))
            if not data:
                raise asyncio.IncompleteReadError(b"", size)
            size -= len(data)
            await send(data)
        if await reader.readexactly(2) != b"\r\n":
            raise ValueError("chunk data not followed by CRLF")
        await send(b"\r\n")
    trailers = 0
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        trailers += len(line)
        if trailers > MAX_HEAD or b"\r" in line[:-2] or b"\n" in line[:-2]:
            raise ValueError("malformed or oversized chunked trailers")
        await send(line)
    await send(line)


def upstream_head(
    request: Request,
    path: str,
    authority: str,
    extra: Sequence[tuple[str, str]] = (),
    drop: Collection[str] = (),
) -> bytes:
    """The request head sent upstream: origin form, Host set, hop-by-hop dropped, Connection: close."""
    named = {t.strip().lower() for v in request.values("connection") for t in v.split(",")} - _FRAMING
    skip = HOP_BY_HOP | named | {"host"} | {name.lower() for name in drop}
    lines = [f"{request.method} {path} {request.version}", f"Host: {authority}"]
    lines += [f"{name}: {value}" for name, value in request.headers if name.lower() not in skip]
    lines += [f"{name}: {value}" for name, value in extra]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def read_status(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> tuple[bytes, int | None]:
    """Relay interim (1xx) responses; return the final status line, not yet sent, and its code."""
    while True:
        line = await upstream.readuntil(b"\n")
        match = _STATUS.match(line)
        code = int(match.group(1)) if match else None
        if code is None or not 100 <= code < 200 or code == 101:
            return line, code
        client.write(line)
        while (line := await upstream.readuntil(b"\n")) not in (b"\r\n", b"\n"):
            client.write(line)
        client.write(line)
        await client.drain()


def error_response(status: int, reason: str) -> bytes:
    body = f"launcher egress proxy: {reason}\n".encode("ascii", "backslashreplace")
    headers = [
        f"HTTP/1.1 {status} {_PHRASES.get(status, 'Error')}",
        "Content-Type: text/plain",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == 403:
        headers.append("X-Launcher-Egress: denied")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body

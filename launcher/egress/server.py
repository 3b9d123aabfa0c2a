"""launcher's egress proxy: the only way out of a run's network.

Standard library only: this file is copied into a container that has nothing but python3 (3.11)
and ca-certificates, and runs unprivileged as::

    python3 egress_proxy.py --policies DIR --logs DIR [--listen HOST:PORT] [--public-cidr CIDR]...
                            [--deny-addr IP]... [--ca-file FILE] [--connect-timeout SECONDS]

One proxy is attached to many per-run networks. Each run has a policy file ``*.json`` in
--policies (written atomically by the launcher, re-read when a new client connects)::

    {"version": 1, "run_id": "R-7", "subnet": "10.213.0.16/28", "mode": "allowlist" | "open",
     "allow": [{"host": "pypi.org", "port": null}, {"host": "*.github.com", "port": 443}],
     "api_keys": [{"name": "ANTHROPIC_API_KEY", "upstream": "https://api.anthropic.com",
                   "header": "x-api-key", "value": "..."}],
     "log": "R-7.jsonl"}

A connection belongs to the policy whose subnet holds both its local and its peer address. The
proxy serves, one request per connection: CONNECT tunnels (a TLS ClientHello must name the
CONNECT host), absolute-form http:// requests, and ``/_launcher/keys/NAME/...``, which forwards
over TLS to the key's upstream with the key added. Names are checked against the allowlist
before any lookup; every resolved address must be public; the proxy connects to the address it
checked. Each decision is one JSON line in --logs/<log>.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import ipaddress
import json
import os
import re
import signal
import socket
import ssl
import sys
import traceback
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

MAX_HEAD = 64 * 1024
MAX_HELLO = 64 * 1024
MAX_POLICY = 1024 * 1024
HEAD_TIMEOUT = 30.0
# After answering, the proxy reads (up to LINGER_BYTES of) what the client still sends for this
# long before closing, so that unread input does not turn the close into a reset that discards
# the answer. Also how long a close may take to flush.
LINGER = 2.0
LINGER_BYTES = 1024 * 1024
CHUNK = 64 * 1024
KEY_PREFIX = "/_launcher/keys/"
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "proxy-authorization", "te", "trailer", "upgrade"}
)
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "x-api-key", "api-key", "x-goog-api-key"})
_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
_LABEL = re.compile(r"[A-Za-z0-9_-]{1,63}")
_HEX_NUMBER = re.compile(r"0x[0-9a-f]*")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_STATUS = re.compile(rb"HTTP/\d\.\d (\d{3})[ \r\n]")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_PHRASES = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}


class Refused(Exception):
    """The proxy answers the request itself with this status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# ---------------------------------------------------------------- pure helpers


def check_host(host: str) -> str:
    """The host name normalised (lower case, no trailing dot), or ValueError.

    IP literals, and numeric forms the resolver would read as addresses (``2130706433``,
    ``0x7f.1``, ``127.1``), are refused so that only names reach the allowlist and the lookup.
    """
    if not host.isascii():
        raise ValueError("not a valid host name")
    name = host.lower().removesuffix(".")
    if name.startswith("[") or ":" in name:
        raise ValueError("IP addresses are refused; name the host")
    if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in name.split(".")):
        raise ValueError("not a valid host name")
    last = name.rsplit(".", 1)[-1]
    if last.isdigit() or _HEX_NUMBER.fullmatch(last):
        raise ValueError("IP addresses are refused; name the host")
    return name


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
        if port not in ((80, 443) if rule.port is None else (rule.port,)):
            continue
        if host.endswith(rule.host[1:]) if rule.host.startswith("*.") else host == rule.host:
            return f"allowlist {rule}"
    return None


def _judged_as(ip: IPAddress) -> IPAddress:
    """IPv6 forms that carry an IPv4 address reach that address, so they are judged by it."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        if ip.sixtofour is not None:
            return ip.sixtofour
        if ip in _NAT64:
            return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def address_refusal(address: str, public: Sequence[IPNetwork] = (), deny: Collection[IPAddress] = ()) -> str | None:
    """Why the proxy must not connect to this resolved address, or None when it may."""
    try:
        raw = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address[:64]!r}, which is not an IP address"
    ip = _judged_as(raw)
    if ip in deny or raw in deny:
        return f"{address}, the launcher host"
    if any(ip in net or raw in net for net in public):
        return None
    if not ip.is_global or ip.is_multicast or ip.is_reserved or ip.is_unspecified or ip.is_private:
        return f"{address}, which is not a public address"
    return None


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
    if not _TOKEN.fullmatch(method) or version not in ("HTTP/1.0", "HTTP/1.1") or not target:
        raise ValueError("malformed request line")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in target):
        raise ValueError("malformed request target")
    headers = []
    for line in lines[1:-2]:
        name, sep, value = line.partition(":")
        if not sep or not _TOKEN.fullmatch(name) or any(ch in value for ch in "\r\n\0"):
            raise ValueError("malformed header line")
        headers.append((name, value.strip(" \t")))
    return Request(method, target, version, headers)


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
    """Pass a chunked body through as it came, up to the last chunk and trailers, and nothing after."""
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


# ---------------------------------------------------------------- policies


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


def _parse_api_key(entry: object, where: str) -> ApiKey:
    # Messages name fields, never values: a value may be a key.
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not an object")
    name, upstream, header, value = (entry.get(k) for k in ("name", "upstream", "header", "value"))
    if not isinstance(name, str) or not name or "/" in name:
        raise ValueError(f"{where}.name is not a key name")
    if not isinstance(header, str) or not _TOKEN.fullmatch(header):
        raise ValueError(f"{where}.header is not a header name")
    if not isinstance(value, str) or not value or not value.isascii() or not value.isprintable():
        raise ValueError(f"{where}.value is not printable ASCII text")
    if not isinstance(upstream, str) or not upstream.startswith("https://") or any(c in upstream for c in "?#@"):
        raise ValueError(f"{where}.upstream is not https://host[:port][/path]")
    authority, _, path = upstream[len("https://") :].partition("/")
    host, port = split_authority(authority, 443)
    return ApiKey(name, check_host(host), port, f"/{path}".rstrip("/"), header, value)


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
        wildcard = host.startswith("*.")
        name = check_host(host[2:] if wildcard else host)
        rules.append(AllowRule(f"*.{name}" if wildcard else name, port))
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


def _normalised(address: str) -> IPAddress | None:
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


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

    def find(self, local: str, peer: str) -> Policy | None:
        """The policy whose subnet holds both addresses (the most specific, if several do)."""
        local_ip, peer_ip = _normalised(local), _normalised(peer)
        if local_ip is None or peer_ip is None:
            return None
        found = [
            policy
            for _, policy in self._files.values()
            if policy is not None and local_ip in policy.subnet and peer_ip in policy.subnet
        ]
        return max(found, key=lambda policy: policy.subnet.prefixlen, default=None)


# ---------------------------------------------------------------- the server


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class Config:
    policies: str
    logs: str
    public_cidrs: tuple[IPNetwork, ...] = ()
    deny_addrs: frozenset[IPAddress] = frozenset()
    ca_file: str | None = None
    connect_timeout: float = 10.0
    head_timeout: float = HEAD_TIMEOUT
    resolve: Resolver = system_resolve


@dataclass
class _Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    client: str
    local_ip: str
    policy: Policy | None


@dataclass
class _Decision:
    kind: str = "http"
    method: str | None = None
    host: str | None = None
    port: int | None = None
    reason: str = ""
    address: str | None = None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    try:
        # A peer that stops reading would keep unsent data, and so the socket, forever.
        async with asyncio.timeout(LINGER):
            await writer.wait_closed()
    except Exception:
        writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then half-close writer so the far side sees the end as well."""
    with contextlib.suppress(OSError):
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()


async def _read_client_hello(reader: asyncio.StreamReader, first: bytes) -> tuple[bytes, str | None]:
    data = first
    while (hello := client_hello_message(data)) is None:
        if len(data) >= MAX_HELLO:
            raise ValueError("ClientHello larger than 64 KiB")
        more = await reader.read(CHUNK)
        if not more:
            raise ValueError("client closed during the ClientHello")
        data += more
    return data, server_name(hello)


async def _read_status(upstream: asyncio.StreamReader, client: asyncio.StreamWriter) -> tuple[bytes, int | None]:
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


class EgressProxy:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.policies = PolicyStore(config.policies)
        self.tls = ssl.create_default_context()
        if config.ca_file:
            self.tls.load_verify_locations(config.ca_file)
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    async def start(self, host: str, port: int) -> asyncio.Server:
        server = await asyncio.start_server(self.handle, host, port, limit=MAX_HEAD)
        self._servers.append(server)
        return server

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer, local = writer.get_extra_info("peername") or ("?", 0), writer.get_extra_info("sockname") or ("?", 0)
        decision = _Decision()
        try:
            self.policies.refresh()
            conn = _Conn(reader, writer, f"{peer[0]}:{peer[1]}", local[0], self.policies.find(local[0], peer[0]))
            try:
                await self._serve(conn, decision)
            except Refused as refused:
                outcome = "deny" if refused.status in (400, 403) else "allow"
                self._record(conn, decision, outcome, refused.reason, refused.status)
                with contextlib.suppress(OSError):
                    writer.write(error_response(refused.status, refused.reason))
                    await writer.drain()
            except Exception as exc:
                brief = isinstance(exc, OSError | asyncio.IncompleteReadError)
                detail = repr(exc) if brief else traceback.format_exc()
                print(f"egress proxy: connection from {conn.client} failed: {detail}", file=sys.stderr)
            await self._linger(conn)
        finally:
            writer.close()  # already closed unless cancelled (shutdown) before the linger
            if task is not None:
                self._tasks.discard(task)

    async def _linger(self, conn: _Conn) -> None:
        with contextlib.suppress(Exception):
            if conn.writer.can_write_eof():
                conn.writer.write_eof()
            async with asyncio.timeout(LINGER):
                discarded = 0
                while discarded < LINGER_BYTES and (data := await conn.reader.read(CHUNK)):
                    discarded += len(data)
        await _close(conn.writer)

    def _record(self, conn: _Conn, d: _Decision, decision: str, reason: str, status: int | None) -> None:
        policy = conn.policy
        line = {
            "ts": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
            "run_id": policy.run_id if policy else None,
            "client": conn.client,
            "kind": d.kind,
            "method": d.method,
            "host": d.host[:300] if d.host else d.host,
            "port": d.port,
            "decision": decision,
            "reason": reason,
            "status": status,
            "address": d.address,
        }
        text = json.dumps(line) + "\n"
        if policy is not None and policy.log is not None:
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
            try:
                fd = os.open(os.path.join(self.config.logs, policy.log), flags, 0o600)
                try:
                    os.write(fd, text.encode())  # one write per line: O_APPEND keeps lines whole
                finally:
                    os.close(fd)
                return
            except OSError as exc:
                print(f"egress proxy: cannot write {policy.log}: {exc}", file=sys.stderr)
        sys.stderr.write(text)
        sys.stderr.flush()

    async def _serve(self, conn: _Conn, d: _Decision) -> None:
        try:
            head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), self.config.head_timeout)
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise Refused(400, "the request head ended early") from None
            return  # connected and left without a word: not a decision
        except asyncio.LimitOverrunError:
            raise Refused(400, "request head larger than 64 KiB") from None
        except TimeoutError:
            raise Refused(400, f"no request head within {self.config.head_timeout:g} s") from None
        try:
            request = parse_head(head)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        d.method = request.method
        target, authority, host, port = request.target, "", "", 0
        try:
            if request.method == "CONNECT":
                d.kind = "connect"
                host, port = split_authority(target, None)
            elif target.startswith(KEY_PREFIX):
                d.kind = "api-key"
            elif target.startswith("/"):
                raise ValueError(
                    "this is an HTTP proxy: send absolute-form requests (http://host/path), CONNECT for "
                    f"https, or API-key requests to {KEY_PREFIX}NAME/"
                )
            elif target[:7].lower() == "http://":
                authority, target = _split_url(target)
                host, port = split_authority(authority, 80)
                local = _normalised(conn.local_ip)
                if target.startswith(KEY_PREFIX) and local is not None and _normalised(host.strip("[]")) == local:
                    d.kind = "api-key"
            elif target[:8].lower() == "https://":
                raise ValueError("https:// URLs go through CONNECT")
            else:
                raise ValueError("malformed request target")
        except ValueError as exc:
            raise Refused(400, str(exc)) from None
        if d.kind != "api-key":
            d.host, d.port = host, port
        policy = conn.policy
        if policy is None:
            raise Refused(403, "no policy for this client")
        if d.kind == "api-key":
            await self._api_key(conn, d, policy, request, target)
            return
        length = self._framing(request) if d.kind == "http" else 0
        try:
            name = check_host(host)
        except ValueError as exc:
            raise Refused(403, str(exc)) from None
        d.host = name
        reason = allow_reason(name, port, policy.mode, policy.allow)
        if reason is None:
            raise Refused(403, f"{name}:{port} is not on this run's allowlist")
        d.reason = reason
        up_reader, up_writer = await self._open(d, name, port, tls=False)
        if d.kind == "connect":
            await self._tunnel(conn, d, name, up_reader, up_writer)
        else:
            head = upstream_head(request, target, authority)
            await self._exchange(conn, d, up_reader, up_writer, head, length)

    async def _open(
        self, d: _Decision, host: str, port: int, tls: bool
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Resolve, refuse unless every address is public, connect to a checked address."""
        timeout = self.config.connect_timeout
        try:
            addresses = await asyncio.wait_for(self.config.resolve(host, port), timeout)
        except Exception as exc:  # whatever the resolver raises, fail closed
            raise Refused(403, f"lookup of {host} failed: {exc or type(exc).__name__}") from None
        if not addresses:
            raise Refused(403, f"lookup of {host} returned no addresses")
        for address in addresses:
            problem = address_refusal(address, self.config.public_cidrs, self.config.deny_addrs)
            if problem is not None:
                raise Refused(403, f"{host} resolves to {problem}")
        errors = []
        for address in addresses:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        address,
                        port,
                        ssl=self.tls if tls else None,
                        server_hostname=host if tls else None,
                        limit=MAX_HEAD,
                    ),
                    timeout,
                )
            except (OSError, TimeoutError) as exc:
                errors.append(f"{address}: {exc or type(exc).__name__}")
                continue
            d.address = address
            return reader, writer
        raise Refused(502, f"cannot {'reach over TLS' if tls else 'connect to'} {host}:{port} ({'; '.join(errors)})")

    async def _tunnel(
        self, conn: _Conn, d: _Decision, name: str, up_reader: asyncio.StreamReader, up_writer: asyncio.StreamWriter
    ) -> None:
        try:
            self._record(conn, d, "allow", d.reason, 200)
            conn.writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            await conn.writer.drain()
            # Upstream to client from the start: SSH and other server-speaks-first protocols.
            down = asyncio.create_task(_pipe(up_reader, conn.writer))
            up = asyncio.create_task(self._client_to_upstream(conn, d, name, up_writer))
            try:
                done, _ = await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
                if up in done and not up.cancelled() and up.exception() is None and up.result():
                    await down  # the client half-closed; let the upstream finish its answer
            finally:
                for task in (down, up):
                    task.cancel()
                await asyncio.gather(down, up, return_exceptions=True)
        finally:
            await _close(up_writer)

    async def _client_to_upstream(self, conn: _Conn, d: _Decision, host: str, upstream: asyncio.StreamWriter) -> bool:
        """Pipe client to upstream once a TLS ClientHello names host; False if it does not."""
        data = await conn.reader.read(CHUNK)
        if data[:1] == b"\x16":
            try:
                data, sni = await asyncio.wait_for(_read_client_hello(conn.reader, data), self.config.head_timeout)
                problem = None
                if sni is None or sni.lower().removesuffix(".") != host:
                    problem = f"tls server name {(sni or '(none)')[:255]} does not match CONNECT host {host}"
            except (ValueError, TimeoutError) as exc:
                problem = f"unreadable TLS ClientHello ({exc or type(exc).__name__}) for CONNECT host {host}"
            if problem is not None:
                self._record(conn, d, "deny", problem, None)
                return False
        if data:
            upstream.write(data)
            await upstream.drain()
            await _pipe(conn.reader, upstream)
        elif upstream.can_write_eof():
            upstream.write_eof()
        return True

    async def _api_key(self, conn: _Conn, d: _Decision, policy: Policy, request: Request, target: str) -> None:
        rest = target[len(KEY_PREFIX) :]
        cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
        name, rest = rest[:cut], rest[cut:]
        key = policy.api_keys.get(name)
        if key is None:
            raise Refused(403, f"no API key named {name[:64]} for this run")
        d.host, d.port, d.reason = key.host, key.port, f"api-key {key.name}"
        length = self._framing(request)
        # The allowlist does not apply (the operator chose this upstream), the address checks do.
        up_reader, up_writer = await self._open(d, key.host, key.port, tls=True)
        path = key.base_path + rest
        head = upstream_head(
            request,
            path if path.startswith("/") else f"/{path}",
            key.authority,
            extra=[(key.header, key.value)],
            drop=CREDENTIAL_HEADERS | {key.header.lower()},
        )
        await self._exchange(conn, d, up_reader, up_writer, head, length)

    @staticmethod
    def _framing(request: Request) -> int | None:
        try:
            return body_framing(request)
        except ValueError as exc:
            raise Refused(400, str(exc)) from None

    async def _exchange(
        self,
        conn: _Conn,
        d: _Decision,
        up_reader: asyncio.StreamReader,
        up_writer: asyncio.StreamWriter,
        head: bytes,
        length: int | None,
    ) -> None:
        """Send head and exactly one body upstream while relaying the response back."""
        body_error: list[str] = []

        async def send(data: bytes) -> None:
            up_writer.write(data)
            await up_writer.drain()

        async def send_request() -> None:
            try:
                await send(head)
                if length is None:
                    await forward_chunked(conn.reader, send)
                remaining = length or 0
                while remaining:
                    data = await conn.reader.read(min(remaining, CHUNK))
                    if not data:
                        raise ValueError("the request body ended early")
                    remaining -= len(data)
                    await send(data)
            except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
                body_error.append(f"bad request body: {exc or type(exc).__name__}")
                up_writer.transport.abort()  # the upstream must not act on a partial request

        # Concurrently: a client sending Expect: 100-continue waits for the upstream's 100.
        sender = asyncio.create_task(send_request())
        try:
            try:
                line, status = await _read_status(up_reader, conn.writer)
            except asyncio.IncompleteReadError as exc:
                if not exc.partial:
                    # A failed body aborts the upstream, and records why before it does.
                    if body_error:
                        raise Refused(400, body_error[0]) from None
                    raise Refused(502, f"{d.host} closed without a response") from None
                line, status = exc.partial, None
            except asyncio.LimitOverrunError:
                line, status = b"", None
            self._record(conn, d, "allow", d.reason, status)
            conn.writer.write(line)
            await _pipe(up_reader, conn.writer)
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await _close(up_writer)


def _split_url(url: str) -> tuple[str, str]:
    """``http://authority/path?query`` as (authority, origin-form target)."""
    rest = url[len("http://") :]
    cut = min((i for i in (rest.find("/"), rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:].split("#", 1)[0]
    if "@" in authority:
        raise ValueError("user names in proxied URLs are not supported")
    return authority, path if path.startswith("/") else f"/{path}"


# ---------------------------------------------------------------- command line


def _listen(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not (port.isascii() and port.isdigit() and int(port) < 65536):
        raise ValueError(text)
    return host.strip("[]"), int(port)  # port 0: any free port, as the ready line reports


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(text)
    return value


def parse_args(argv: list[str] | None) -> tuple[Config, str, int]:
    parser = argparse.ArgumentParser(prog="egress_proxy.py", description="launcher's egress proxy")
    parser.add_argument("--listen", type=_listen, default=("0.0.0.0", 3128), help="HOST:PORT (default 0.0.0.0:3128)")  # noqa: S104
    parser.add_argument("--policies", required=True, help="directory of per-run policy files (*.json)")
    parser.add_argument("--logs", required=True, help="directory the decision logs are appended to")
    parser.add_argument(
        "--public-cidr",
        type=lambda text: ipaddress.ip_network(text, strict=False),
        action="append",
        default=[],
        help="TEST ONLY: treat addresses in CIDR as public (repeatable)",
    )
    parser.add_argument(
        "--deny-addr",
        type=lambda text: _judged_as(ipaddress.ip_address(text)),
        action="append",
        default=[],
        help="an address of the launcher host, refused even if public (repeatable)",
    )
    parser.add_argument("--ca-file", help="extra CA bundle trusted for API-key upstreams")
    parser.add_argument("--connect-timeout", type=_positive, default=10.0, help="seconds (default 10)")
    args = parser.parse_args(argv)
    for option in ("policies", "logs"):
        if not os.path.isdir(getattr(args, option)):
            parser.error(f"--{option} {getattr(args, option)}: not a directory")
    config = Config(
        policies=args.policies,
        logs=args.logs,
        public_cidrs=tuple(args.public_cidr),
        deny_addrs=frozenset(args.deny_addr),
        ca_file=args.ca_file,
        connect_timeout=args.connect_timeout,
    )
    host, port = args.listen
    return config, host, port


async def serve(config: Config, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT."""
    proxy = EgressProxy(config)
    server = await proxy.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()
    print(f"egress proxy listening on {bound[0]}:{bound[1]}", file=sys.stderr, flush=True)
    await stop.wait()
    await proxy.close()


def main(argv: list[str] | None = None) -> int:
    config, host, port = parse_args(argv)
    try:
        asyncio.run(serve(config, host, port))
    except OSError as exc:
        print(f"egress proxy: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

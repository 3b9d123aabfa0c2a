"""The proxy itself: one asyncio server that every run's network reaches at the same port.

It serves one request per connection: CONNECT tunnels (a TLS ClientHello must name the
CONNECT host), absolute-form http:// requests, and ``/_launcher/keys/NAME/...``, which forwards
over TLS to the key's upstream with the key added. Names are checked against the run's
allowlist before any lookup; every resolved address must be public (or in a private range the
operator allowed, see addresses.py); the proxy connects to the address it checked. Each
decision is one JSON line in --logs/<log>.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import socket
import ssl
import sys
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from .addresses import IPAddress, IPNetwork, address_refusal, normalised
from .hostnames import check_host, split_authority
from .http1 import (
    CHUNK,
    CREDENTIAL_HEADERS,
    MAX_HEAD,
    Request,
    body_framing,
    error_response,
    forward_chunked,
    parse_head,
    read_status,
    split_url,
    upstream_head,
)
from .policy import Policy, PolicyStore, allow_reason
from .tls import read_client_hello

Resolver = Callable[[str, int], Awaitable[list[str]]]

HEAD_TIMEOUT = 30.0
# After answering, the proxy reads (up to LINGER_BYTES of) what the client still sends for this
# long before closing, so that unread input does not turn the close into a reset that discards
# the answer. Also how long a close may take to flush.
LINGER = 2.0
LINGER_BYTES = 1024 * 1024
KEY_PREFIX = "/_launcher/keys/"


class Refused(Exception):
    """The proxy answers the request itself with this status and reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


async def system_resolve(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class Config:
    policies: str
    logs: str
    public_cidrs: tuple[IPNetwork, ...] = ()
    private_allowed: tuple[IPNetwork, ...] = ()
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

    def idle(self) -> bool:
        """No run has a policy here and no connection is open: nothing would miss the proxy."""
        self.policies.refresh()
        return not self._tasks and not len(self.policies)

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
                authority, target = split_url(target)
                host, port = split_authority(authority, 80)
                local = normalised(conn.local_ip)
                if target.startswith(KEY_PREFIX) and local is not None and normalised(host.strip("[]")) == local:
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
            c = self.config
            problem = address_refusal(address, c.public_cidrs, c.deny_addrs, c.private_allowed)
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
                data, sni = await asyncio.wait_for(read_client_hello(conn.reader, data), self.config.head_timeout)
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
                line, status = await read_status(up_reader, conn.writer)
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

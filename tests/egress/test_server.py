"""The egress proxy in-process against local upstreams on 127.0.0.x: what it lets out, what it refuses, what it logs.

The proxy runs on its own event loop thread; clients are plain blocking sockets. Names resolve
through an injected table, so no test touches DNS or /etc/hosts. Every "not contacted" claim is
checked with an accept-queue barrier (see Upstream.barrier), never by waiting.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from egress_kit import client_hello, proxy_command

from launcher.egress import server

PROXY_IP = "127.0.0.1"
HTTP_IP = "127.0.0.2"
ECHO_IP = "127.0.0.3"
TLS_IP = "127.0.0.4"
HOST_IP = "127.0.0.5"  # "public" but one of the launcher host's own addresses
PRIVATE_IP = "127.0.0.66"  # outside the public set: must never be reached
SECRET = "sk-test-SECRET-0123456789"
FIELDS = {"ts", "run_id", "client", "kind", "method", "host", "port", "decision", "reason", "status", "address"}
TIMEOUT = 10.0


# ---------------------------------------------------------------- upstreams


@dataclass
class UpConn:
    """One connection an upstream accepted, and what it received on it."""

    first: bytes = b""
    request_line: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    after: bytes = b""  # anything that arrived after the request it answered
    done: threading.Event = field(default_factory=threading.Event)

    def header(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]


def serve_http(sock: socket.socket, conn: UpConn) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    conn.request_line = lines[0]
    conn.headers = [(name, value) for name, _, value in (line.partition(": ") for line in lines[1:])]
    if conn.header("transfer-encoding"):
        while not ((rest.startswith(b"0\r\n") or b"\r\n0\r\n" in rest) and rest.endswith(b"\r\n\r\n")):
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    else:
        length = int((conn.header("content-length") or ["0"])[0])
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    conn.body = rest
    body = b"hello from upstream\n"
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    if isinstance(sock, ssl.SSLSocket):
        return
    sock.shutdown(socket.SHUT_WR)
    while chunk := sock.recv(65536):
        conn.after += chunk


def serve_banner_echo(sock: socket.socket, conn: UpConn) -> None:
    sock.sendall(b"SSH-2.0-test\r\n")  # the server speaks first, as SSH does
    while data := sock.recv(65536):
        sock.sendall(data)


class Upstream:
    """A TCP (optionally TLS) server on one loopback address that records the connections it accepts."""

    def __init__(
        self, ip: str, handler: Callable[[socket.socket, UpConn], None], tls: ssl.SSLContext | None = None
    ) -> None:
        self.ip, self.handler, self.tls = ip, handler, tls
        self.listener = socket.create_server((ip, 0))
        self.port: int = self.listener.getsockname()[1]
        self.conns: list[UpConn] = []
        self._probes: set[tuple[str, int]] = set()
        self._seen: list[tuple[str, int]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                sock, addr = self.listener.accept()
            except OSError:
                return
            with self._cond:
                self._seen.append(addr)
                probe = addr in self._probes
                if not probe:
                    conn = UpConn()
                    self.conns.append(conn)
                self._cond.notify_all()
            if probe:
                sock.close()
            else:
                threading.Thread(target=self._serve, args=(sock, conn), daemon=True).start()

    def _serve(self, sock: socket.socket, conn: UpConn) -> None:
        try:
            with sock:
                sock.settimeout(TIMEOUT)
                if self.tls is None:
                    self.handler(sock, conn)
                    return
                # TLS upstreams record whether anything at all arrived before handshaking.
                conn.first = sock.recv(5, socket.MSG_PEEK)
                if conn.first:
                    with self.tls.wrap_socket(sock, server_side=True) as tls_sock:
                        self.handler(tls_sock, conn)
        except OSError:
            pass
        finally:
            conn.done.set()

    def barrier(self) -> list[UpConn]:
        """The connections accepted so far, for certain.

        The kernel queues connections in arrival order, so once a probe made now has been
        accepted, every connection the proxy made before it has been accepted too.
        """
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        mine = probe.getsockname()
        with self._cond:
            self._probes.add(mine)
        with probe:
            probe.connect((self.ip, self.port))
            with self._cond:
                assert self._cond.wait_for(lambda: mine in self._seen, timeout=TIMEOUT)
                return list(self.conns)

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
        self.listener.close()


# ---------------------------------------------------------------- the proxy


class Resolver:
    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(self.table[host])


class ProxyThread:
    """An EgressProxy serving on its own event loop in a background thread."""

    def __init__(self, config: server.Config, host: str = PROXY_IP) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxy = server.EgressProxy(config)
        self.port = self.listen(host)

    def listen(self, host: str) -> int:
        started = asyncio.run_coroutine_threadsafe(self.proxy.start(host, 0), self.loop).result(TIMEOUT)
        port: int = started.sockets[0].getsockname()[1]
        return port

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.close(), self.loop).result(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(TIMEOUT)
        self.loop.close()


@dataclass
class Response:
    raw: bytes
    status: int
    headers: dict[str, str]
    body: bytes


def parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines[1:])}
    return Response(raw, int(lines[0].split(" ")[1]), headers, body)


def read_until_eof(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def read_head(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


class Net:
    """Upstreams, a resolver, a policies and a logs folder, and a proxy reading them."""

    def __init__(self, tmp_path: Path, cert_dir: Path) -> None:
        self.cert = cert_dir / "cert.pem"
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(self.cert, cert_dir / "key.pem")
        self.http = Upstream(HTTP_IP, serve_http)
        self.echo = Upstream(ECHO_IP, serve_banner_echo)
        self.tls = Upstream(TLS_IP, serve_http, tls)
        self.private = Upstream(PRIVATE_IP, serve_http)
        self.resolver = Resolver(
            {
                "allowed.test": [HTTP_IP],
                "denied.test": [HTTP_IP],
                "anything.test": [HTTP_IP],
                "a.wild.test": [HTTP_IP],
                "deep.a.wild.test": [HTTP_IP],
                "wild.test": [HTTP_IP],
                "nullport.test": [HTTP_IP],
                "echo.test": [ECHO_IP],
                "tls.test": [TLS_IP],
                "api.test": [TLS_IP],
                "private.test": [PRIVATE_IP],
                "meta.test": ["169.254.169.254"],
                "mixed.test": [HTTP_IP, PRIVATE_IP],
                "launcher.test": [HOST_IP],
                "empty.test": [],
            }
        )
        self.policies = tmp_path / "policies"
        self.logs = tmp_path / "logs"
        self.policies.mkdir()
        self.logs.mkdir()
        self.write_policy("R-1.json", self.policy())
        self._proxies: list[ProxyThread] = []
        self.proxy = self.start_proxy()

    def config(self, **overrides: Any) -> server.Config:
        settings: dict[str, Any] = {
            "policies": str(self.policies),
            "logs": str(self.logs),
            "public_cidrs": tuple(ipaddress.ip_network(f"{ip}/32") for ip in (HTTP_IP, ECHO_IP, TLS_IP, HOST_IP)),
            "deny_addrs": frozenset({ipaddress.ip_address(HOST_IP)}),
            "ca_file": str(self.cert),
            "connect_timeout": 5.0,
            "resolve": self.resolver,
        }
        return server.Config(**{**settings, **overrides})

    def start_proxy(self, **overrides: Any) -> ProxyThread:
        proxy = ProxyThread(self.config(**overrides))
        self._proxies.append(proxy)
        return proxy

    def policy(self, **overrides: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "version": 1,
            "run_id": "R-1",
            "subnet": "127.0.0.0/8",
            "mode": "allowlist",
            "allow": [
                {"host": "allowed.test", "port": self.http.port},
                {"host": "*.wild.test", "port": self.http.port},
                {"host": "nullport.test", "port": None},
                {"host": "echo.test", "port": self.echo.port},
                {"host": "tls.test", "port": self.tls.port},
                {"host": "private.test", "port": self.private.port},
                {"host": "meta.test", "port": 80},
                {"host": "nowhere.test", "port": self.http.port},
                {"host": "empty.test", "port": self.http.port},
                {"host": "mixed.test", "port": self.http.port},
                {"host": "launcher.test", "port": self.http.port},
            ],
            "api_keys": [
                {
                    "name": "TEST_API_KEY",
                    "upstream": f"https://api.test:{self.tls.port}/base",
                    "header": "x-api-key",
                    "value": SECRET,
                },
                {
                    "name": "PRIVATE_KEY",
                    "upstream": f"https://private.test:{self.private.port}",
                    "header": "authorization",
                    "value": f"Bearer {SECRET}",
                },
            ],
            "log": "R-1.jsonl",
        }
        return {**doc, **overrides}

    def write_policy(self, name: str, doc: object) -> None:
        # As the launcher does: a temporary file renamed into place.
        tmp = self.policies / f".{name}.tmp"
        tmp.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        tmp.rename(self.policies / name)

    def send(self, raw: bytes, *, port: int | None = None, to: str = PROXY_IP, source: str | None = None) -> Response:
        address = (to, port or self.proxy.port)
        with socket.create_connection(address, TIMEOUT, (source, 0) if source else None) as sock:
            sock.sendall(raw)
            return parse_response(read_until_eof(sock))

    def get(self, url: str, *headers: str) -> Response:
        extra = "".join(f"{h}\r\n" for h in headers)
        return self.send(f"GET {url} HTTP/1.1\r\nHost: ignored.example\r\n{extra}\r\n".encode())

    def connect(self, target: str) -> tuple[socket.socket, bytes]:
        sock = socket.create_connection((PROXY_IP, self.proxy.port), TIMEOUT)
        sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        return sock, read_head(sock)

    def log(self, name: str = "R-1.jsonl") -> list[dict[str, Any]]:
        path = self.logs / name
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def close(self) -> None:
        for proxy in self._proxies:
            proxy.stop()
        for upstream in (self.http, self.echo, self.tls, self.private):
            upstream.close()


@pytest.fixture(scope="session")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("cert")
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
            *("-keyout", str(folder / "key.pem"), "-out", str(folder / "cert.pem"), "-days", "2"),
            *("-subj", "/CN=egress-test", "-addext", "subjectAltName=DNS:api.test,DNS:tls.test,DNS:other.test"),
        ],
        check=True,
        capture_output=True,
    )
    return folder


@pytest.fixture
def net(tmp_path: Path, cert_dir: Path) -> Iterator[Net]:
    setup = Net(tmp_path, cert_dir)
    try:
        yield setup
    finally:
        setup.close()


def assert_denied(response: Response, reason: str) -> None:
    assert response.status == 403, response.raw
    assert response.headers["x-launcher-egress"] == "denied"
    assert response.headers["content-type"] == "text/plain"
    assert response.headers["connection"] == "close"
    assert response.body.startswith(b"launcher egress proxy: ")
    assert reason in response.body.decode(), response.body


# ---------------------------------------------------------------- plain HTTP


def test_allowed_get_reaches_upstream_in_origin_form_without_hop_by_hop_headers(net: Net) -> None:
    response = net.get(
        f"http://Allowed.Test.:{net.http.port}/path?q=1",
        "Proxy-Connection: keep-alive",
        "Proxy-Authorization: Basic c2VjcmV0",
        "Keep-Alive: timeout=5",
        "Connection: keep-alive, X-Drop-Me",
        "X-Drop-Me: 1",
        "X-Keep-Me: 2",
    )
    assert response.status == 200
    assert response.body == b"hello from upstream\n"
    (conn,) = net.http.barrier()
    assert conn.request_line == "GET /path?q=1 HTTP/1.1"
    assert conn.header("host") == [f"Allowed.Test.:{net.http.port}"]
    assert conn.header("connection") == ["close"]
    assert conn.header("x-keep-me") == ["2"]
    for dropped in ("proxy-connection", "proxy-authorization", "keep-alive", "x-drop-me"):
        assert conn.header(dropped) == []
    (line,) = net.log()
    assert line["decision"] == "allow"
    assert line["kind"] == "http"
    assert line["host"] == "allowed.test"
    assert line["port"] == net.http.port
    assert line["status"] == 200
    assert line["address"] == HTTP_IP
    assert line["reason"] == f"allowlist allowed.test:{net.http.port}"


def test_host_off_the_allowlist_is_refused_before_any_lookup(net: Net) -> None:
    response = net.get(f"http://denied.test:{net.http.port}/")
    assert_denied(response, f"denied.test:{net.http.port} is not on this run's allowlist")
    assert net.resolver.calls == []
    assert net.http.barrier() == []
    (line,) = net.log()
    assert (line["decision"], line["status"], line["address"]) == ("deny", 403, None)


def test_content_length_body_is_forwarded_exactly_and_nothing_after_it(net: Net) -> None:
    pipelined = f"GET http://allowed.test:{net.http.port}/second HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    response = net.send(
        f"POST http://allowed.test:{net.http.port}/upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n".encode()
        + b"hello"
        + pipelined
    )
    assert response.status == 200
    (conn,) = net.http.barrier()
    assert conn.done.wait(TIMEOUT)
    assert conn.body == b"hello"
    assert conn.after == b""


def test_chunked_body_is_forwarded_chunk_by_chunk_and_a_pipelined_request_is_not(net: Net) -> None:
    body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: t\r\n\r\n"
    pipelined = f"GET http://allowed.test:{net.http.port}/second HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    response = net.send(
        f"POST http://allowed.test:{net.http.port}/upload HTTP/1.1\r\n".encode()
        + b"Host: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        + body
        + pipelined
    )
    assert response.status == 200
    (conn,) = net.http.barrier()
    assert conn.done.wait(TIMEOUT)
    assert conn.request_line == "POST /upload HTTP/1.1"
    assert conn.header("transfer-encoding") == ["chunked"]
    assert conn.body == body
    assert conn.after == b""
    assert len(net.log()) == 1


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n", "this is an HTTP proxy"),
        (b"GET https://allowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n", "CONNECT"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nBad Header\r\n\r\n", "malformed header line"),
        (b"GET http://allowed.test/ HTTP/2.0\r\n\r\n", "malformed request line"),
        (b"CONNECT allowed.test HTTP/1.1\r\n\r\n", "the port is missing"),
        (b"GET http://u:p@allowed.test/ HTTP/1.1\r\n\r\n", "user names"),
        (b"POST http://allowed.test/ HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
        (b"GET http://allowed.test/ HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n", "larger than 64 KiB"),
    ],
)
def test_malformed_requests_get_400_and_reach_nobody(net: Net, raw: bytes, reason: str) -> None:
    response = net.send(raw)
    assert response.status == 400
    assert reason in response.body.decode()
    assert net.resolver.calls == []
    assert net.http.barrier() == []
    (line,) = net.log()
    assert (line["decision"], line["status"]) == ("deny", 400)


def test_a_client_that_never_finishes_its_head_gets_400_without_holding_up_others(net: Net) -> None:
    proxy = net.start_proxy(head_timeout=0.3)
    with socket.create_connection((PROXY_IP, proxy.port), TIMEOUT) as slow:
        slow.sendall(b"GET http://allowed.test/ HTTP/1.1\r\n")
        # Meanwhile another client is served in full.
        quick = net.send(f"GET http://allowed.test:{net.http.port}/ HTTP/1.1\r\n\r\n".encode(), port=proxy.port)
        assert quick.status == 200
        response = parse_response(read_until_eof(slow))
    assert response.status == 400
    assert "no request head within 0.3 s" in response.body.decode()


# ---------------------------------------------------------------- names and addresses


@pytest.mark.parametrize(
    "host", ["127.0.0.2", "[::1]", "[::ffff:127.0.0.2]", "2130706433", "0x7f.1", "127.1", "0x7f000002", "0177.0.0.1"]
)
@pytest.mark.parametrize("kind", ["connect", "http"])
def test_ip_literals_and_numeric_hosts_are_refused_without_lookup_or_connect(net: Net, host: str, kind: str) -> None:
    target = f"{host}:{net.http.port}"
    if kind == "connect":
        sock, head = net.connect(target)
        with sock:
            response = parse_response(head + read_until_eof(sock))
    else:
        response = net.get(f"http://{target}/")
    assert_denied(response, "IP addresses are refused")
    assert net.resolver.calls == []
    assert net.http.barrier() == []
    (line,) = net.log()
    assert (line["kind"], line["decision"], line["host"]) == (kind, "deny", host)


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("meta.test", "169.254.169.254, which is not a public address"),
        ("private.test", f"{PRIVATE_IP}, which is not a public address"),
        ("mixed.test", f"{PRIVATE_IP}, which is not a public address"),
        ("launcher.test", f"{HOST_IP}, the launcher host"),
        ("nowhere.test", "lookup of nowhere.test failed"),
        ("empty.test", "lookup of empty.test returned no addresses"),
    ],
)
def test_allowed_names_that_resolve_badly_are_refused_after_the_lookup(net: Net, name: str, reason: str) -> None:
    port = {"meta.test": 80, "private.test": net.private.port}.get(name, net.http.port)
    response = net.get(f"http://{name}:{port}/")
    assert_denied(response, reason)
    assert net.resolver.calls == [name]
    assert net.http.barrier() == []
    assert net.private.barrier() == []
    (line,) = net.log()
    assert (line["decision"], line["host"], line["address"]) == ("deny", name, None)


@pytest.mark.parametrize(
    ("name", "allowed"),
    [("a.wild.test", True), ("deep.a.wild.test", True), ("wild.test", False), ("evilwild.test", False)],
)
def test_a_wildcard_covers_names_under_its_suffix_but_not_the_suffix(net: Net, name: str, allowed: bool) -> None:
    response = net.get(f"http://{name}:{net.http.port}/")
    assert response.status == (200 if allowed else 403)
    assert len(net.http.barrier()) == int(allowed)
    if allowed:
        assert net.log()[0]["reason"] == f"allowlist *.wild.test:{net.http.port}"


def test_names_that_are_not_host_names_are_refused_before_any_lookup_even_when_open(net: Net) -> None:
    net.write_policy("R-1.json", net.policy(mode="open", allow=[]))
    for name in ("-dash.test", "dash-.test", "0x7f", "a..test"):
        assert_denied(net.get(f"http://{name}:{net.http.port}/"), "name the host" if name == "0x7f" else "not a valid")
    assert net.resolver.calls == []
    assert net.http.barrier() == []


def test_ports_are_part_of_the_rule(net: Net) -> None:
    assert_denied(net.get(f"http://nullport.test:{net.http.port}/"), "is not on this run's allowlist")
    assert_denied(net.get(f"http://allowed.test:{net.echo.port}/"), "is not on this run's allowlist")
    assert net.resolver.calls == []


def test_open_mode_allows_any_public_name_but_no_private_address(net: Net) -> None:
    net.write_policy("R-1.json", net.policy(mode="open", allow=[]))
    response = net.get(f"http://anything.test:{net.http.port}/")
    assert response.status == 200
    assert_denied(net.get(f"http://private.test:{net.private.port}/"), "not a public address")
    assert net.private.barrier() == []
    assert [line["reason"] for line in net.log()][:1] == ["open"]


# ---------------------------------------------------------------- CONNECT


def test_connect_tunnels_a_server_speaks_first_protocol(net: Net) -> None:
    sock, head = net.connect(f"echo.test:{net.echo.port}")
    with sock:
        assert head == b"HTTP/1.1 200 Connection established\r\n\r\n"
        assert sock.recv(100) == b"SSH-2.0-test\r\n"
        sock.sendall(b"ping")
        assert sock.recv(100) == b"ping"
        sock.shutdown(socket.SHUT_WR)  # a half-close reaches the upstream, which then ends
        assert read_until_eof(sock) == b""
    (line,) = net.log()
    assert line["kind"] == "connect"
    assert line["method"] == "CONNECT"
    assert (line["decision"], line["status"], line["address"]) == ("allow", 200, ECHO_IP)


def client_context(cert: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(cert))


def test_connect_carries_a_tls_session_whose_server_name_matches(net: Net) -> None:
    sock, head = net.connect(f"tls.test:{net.tls.port}")
    assert head.startswith(b"HTTP/1.1 200 ")
    with client_context(net.cert).wrap_socket(sock, server_hostname="tls.test") as tls:
        tls.sendall(b"GET /over-tls HTTP/1.1\r\nHost: tls.test\r\n\r\n")
        response = parse_response(read_until_eof(tls))
    assert response.status == 200
    assert response.body == b"hello from upstream\n"
    (conn,) = net.tls.barrier()
    assert conn.request_line == "GET /over-tls HTTP/1.1"
    assert len(net.log()) == 1


def test_connect_with_another_tls_server_name_is_cut_off_before_the_upstream_sees_it(net: Net) -> None:
    sock, head = net.connect(f"tls.test:{net.tls.port}")
    assert head.startswith(b"HTTP/1.1 200 ")
    with (
        pytest.raises((ssl.SSLError, OSError)),
        client_context(net.cert).wrap_socket(sock, server_hostname="other.test"),
    ):
        pass
    sock.close()
    (conn,) = net.tls.barrier()
    assert conn.done.wait(TIMEOUT)
    assert conn.first == b""  # not one byte of the ClientHello was forwarded
    allow, deny = net.log()
    assert (allow["decision"], allow["status"]) == ("allow", 200)
    assert deny["decision"] == "deny"
    assert deny["reason"] == "tls server name other.test does not match CONNECT host tls.test"
    assert deny["client"] == allow["client"]


def test_connect_with_a_tls_hello_without_server_name_is_cut_off(net: Net) -> None:
    sock, _ = net.connect(f"tls.test:{net.tls.port}")
    with sock:
        sock.sendall(client_hello(None))
        assert read_until_eof(sock) == b""
    assert net.log()[-1]["reason"] == "tls server name (none) does not match CONNECT host tls.test"


# ---------------------------------------------------------------- API keys


def test_api_key_route_injects_the_key_over_tls_and_drops_client_credentials(net: Net) -> None:
    response = net.send(
        b"POST /_launcher/keys/TEST_API_KEY/v1/messages?beta=1 HTTP/1.1\r\n"
        b"Host: proxy\r\nAuthorization: Bearer client-token\r\nX-Api-Key: client-fake\r\n"
        b"X-Goog-Api-Key: g\r\nApi-Key: a\r\nContent-Length: 5\r\n\r\nhello"
    )
    assert response.status == 200
    assert response.body == b"hello from upstream\n"
    assert SECRET.encode() not in response.raw
    (conn,) = net.tls.barrier()
    assert conn.request_line == "POST /base/v1/messages?beta=1 HTTP/1.1"
    assert conn.header("host") == [f"api.test:{net.tls.port}"]
    assert conn.header("x-api-key") == [SECRET]
    assert conn.header("connection") == ["close"]
    for dropped in ("authorization", "x-goog-api-key", "api-key"):
        assert conn.header(dropped) == []
    assert conn.body == b"hello"
    (line,) = net.log()
    assert (line["kind"], line["decision"], line["reason"]) == ("api-key", "allow", "api-key TEST_API_KEY")
    assert (line["host"], line["port"], line["address"], line["status"]) == ("api.test", net.tls.port, TLS_IP, 200)
    assert SECRET not in (net.logs / "R-1.jsonl").read_text()


def test_api_key_route_in_absolute_form_to_the_proxy_itself(net: Net) -> None:
    response = net.send(
        f"GET http://{PROXY_IP}:{net.proxy.port}/_launcher/keys/TEST_API_KEY HTTP/1.1\r\n".encode()
        + b"Host: x\r\nx-api-key: launcher-proxy-injects-the-real-key\r\n\r\n"
    )
    assert response.status == 200
    (conn,) = net.tls.barrier()
    assert conn.request_line == "GET /base HTTP/1.1"
    assert conn.header("x-api-key") == [SECRET]


def test_unknown_api_key_name_is_refused(net: Net) -> None:
    response = net.send(b"GET /_launcher/keys/OTHER_KEY/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_denied(response, "no API key named OTHER_KEY")
    assert net.tls.barrier() == []
    assert net.log()[0]["kind"] == "api-key"


def test_api_key_upstream_still_passes_the_address_checks(net: Net) -> None:
    response = net.send(b"GET /_launcher/keys/PRIVATE_KEY/v1 HTTP/1.1\r\nHost: x\r\n\r\n")
    assert_denied(response, "not a public address")
    assert net.private.barrier() == []
    assert SECRET.encode() not in response.raw


def test_api_key_upstream_that_fails_tls_verification_is_a_502(net: Net) -> None:
    proxy = net.start_proxy(ca_file=None)  # the test certificate is no longer trusted
    response = net.send(b"GET /_launcher/keys/TEST_API_KEY/v1 HTTP/1.1\r\nHost: x\r\n\r\n", port=proxy.port)
    assert response.status == 502
    assert b"CERTIFICATE_VERIFY_FAILED" in response.body
    assert SECRET.encode() not in response.raw
    assert net.log()[0]["status"] == 502


# ---------------------------------------------------------------- policies


def test_no_matching_policy_is_refused_and_logged_to_stderr_only(net: Net, capfd: pytest.CaptureFixture[str]) -> None:
    net.write_policy("R-1.json", net.policy(subnet="10.9.0.0/16"))
    assert_denied(net.get(f"http://allowed.test:{net.http.port}/"), "no policy for this client")
    assert net.http.barrier() == []
    assert list(net.logs.iterdir()) == []
    lines = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert [(line["run_id"], line["reason"]) for line in lines] == [(None, "no policy for this client")]


def test_policies_added_changed_and_removed_take_effect_on_the_next_connection(net: Net) -> None:
    url = f"http://denied.test:{net.http.port}/"
    assert net.get(url).status == 403
    (net.policies / "R-1.json").unlink()
    assert_denied(net.get(url), "no policy for this client")
    net.write_policy("R-2.json", net.policy(run_id="R-2", mode="open", log="R-2.jsonl"))
    assert net.get(url).status == 200
    net.write_policy("R-2.json", net.policy(run_id="R-2", mode="allowlist", log="R-2.jsonl"))
    assert net.get(url).status == 403
    assert [line["status"] for line in net.log("R-2.jsonl")] == [200, 403]


def test_malformed_hidden_and_non_json_policy_files_are_ignored(net: Net) -> None:
    open_policy = net.policy(mode="open", run_id="OPEN", log="open.jsonl")
    net.write_policy("broken.json", "{not json")
    net.write_policy("bad-mode.json", {**open_policy, "mode": "everything"})
    net.write_policy("bad-host.json", {**open_policy, "allow": [{"host": "1.2.3.4", "port": None}]})
    (net.policies / ".hidden.json").write_text(json.dumps(open_policy))
    (net.policies / "notes.txt").write_text(json.dumps(open_policy))
    assert net.get(f"http://denied.test:{net.http.port}/").status == 403
    assert net.get(f"http://allowed.test:{net.http.port}/").status == 200
    assert not (net.logs / "open.jsonl").exists()


def test_the_local_address_selects_the_run(net: Net) -> None:
    port_b = net.proxy.listen("127.0.0.9")
    (net.policies / "R-1.json").unlink()
    net.write_policy("A.json", net.policy(run_id="A", subnet="127.0.0.0/29", log="A.jsonl"))
    net.write_policy("B.json", net.policy(run_id="B", subnet="127.0.0.8/29", mode="open", log="B.jsonl"))
    request = f"GET http://denied.test:{net.http.port}/ HTTP/1.1\r\n\r\n".encode()
    assert net.send(request, source="127.0.0.1").status == 403
    assert net.send(request, port=port_b, to="127.0.0.9", source="127.0.0.9").status == 200
    # The peer must be on the run's network too.
    assert_denied(net.send(request, port=port_b, to="127.0.0.9", source="127.0.0.1"), "no policy for this client")
    assert [line["run_id"] for line in net.log("A.jsonl")] == ["A"]
    assert [line["run_id"] for line in net.log("B.jsonl")] == ["B"]


def test_a_log_name_that_is_a_path_falls_back_to_stderr(net: Net, capfd: pytest.CaptureFixture[str]) -> None:
    net.write_policy("R-1.json", net.policy(log="../escape.jsonl"))
    assert net.get(f"http://allowed.test:{net.http.port}/").status == 200
    assert not (net.logs.parent / "escape.jsonl").exists()
    assert list(net.logs.iterdir()) == []
    assert '"run_id": "R-1"' in capfd.readouterr().err


# ---------------------------------------------------------------- the decision log


def test_every_decision_is_one_json_line_with_the_documented_fields(net: Net) -> None:
    statuses = [
        net.get(f"http://allowed.test:{net.http.port}/").status,
        net.get(f"http://denied.test:{net.http.port}/").status,
        net.send(b"GET /nope HTTP/1.1\r\n\r\n").status,
        net.send(b"GET /_launcher/keys/TEST_API_KEY/x HTTP/1.1\r\n\r\n").status,
    ]
    sock, _ = net.connect(f"echo.test:{net.echo.port}")
    sock.close()
    # A connection that says nothing makes no decision; once the proxy closes it, it has decided.
    with socket.create_connection((PROXY_IP, net.proxy.port), TIMEOUT) as silent:
        silent.shutdown(socket.SHUT_WR)
        assert read_until_eof(silent) == b""
    lines = net.log()
    assert [line["status"] for line in lines] == [*statuses, 200]
    assert [line["kind"] for line in lines] == ["http", "http", "http", "api-key", "connect"]
    assert [line["decision"] for line in lines] == ["allow", "deny", "deny", "allow", "allow"]
    for line in lines:
        assert set(line) == FIELDS
        assert line["run_id"] == "R-1"
        assert line["client"].startswith(f"{PROXY_IP}:")
        assert datetime.datetime.fromisoformat(line["ts"]).utcoffset() == datetime.timedelta(0)
    assert stat.S_IMODE((net.logs / "R-1.jsonl").stat().st_mode) == 0o600


# ---------------------------------------------------------------- the program


def test_the_program_serves_until_sigterm(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "logs").mkdir()
    args = ["--listen", f"{PROXY_IP}:0", "--policies", str(tmp_path / "policies"), "--logs", str(tmp_path / "logs")]
    with subprocess.Popen(
        [*proxy_command(tmp_path / "state"), *args], stderr=subprocess.PIPE, text=True, env={}
    ) as proc:
        assert proc.stderr is not None
        ready = proc.stderr.readline()
        assert ready.startswith(f"egress proxy listening on {PROXY_IP}:")
        port = int(ready.rsplit(":", 1)[1])
        with socket.create_connection((PROXY_IP, port), TIMEOUT) as sock:
            sock.sendall(b"GET http://pypi.org/ HTTP/1.1\r\n\r\n")
            assert_denied(parse_response(read_until_eof(sock)), "no policy for this client")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(TIMEOUT) == 0


def test_the_program_refuses_a_missing_policies_folder(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    command = proxy_command(tmp_path_factory.mktemp("state"))
    done = subprocess.run(
        [*command, "--policies", str(tmp_path / "nope"), "--logs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
        env={},
    )
    assert done.returncode == 2
    assert "not a directory" in done.stderr
    assert os.listdir(tmp_path) == []

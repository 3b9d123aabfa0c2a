"""Headless Chromium driven over the Chrome DevTools Protocol, with nothing but the stdlib.

A WebSocket client small enough to read (RFC 6455: the upgrade, masked text frames out,
unmasked frames in, continuations joined) and the three CDP methods the web tests need:
navigate, evaluate, screenshot. No Selenium or Playwright: Debian's `chromium` is enough.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import struct
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from helpers import wait_for


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class WebSocket:
    def __init__(self, url: str, *, timeout: float = 30) -> None:
        rest = url.removeprefix("ws://")
        where, _, path = rest.partition("/")
        host, _, port = where.partition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET /{path} HTTP/1.1\r\nHost: {where}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "the DevTools endpoint closed during the WebSocket handshake"
            head += chunk
        status, _, self.pending = head.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status.decode(errors="replace")

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        size = len(payload)
        if size < 126:
            header = struct.pack("!BB", 0x81, 0x80 | size)
        elif size < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        self.sock.sendall(header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def _exactly(self, count: int) -> bytes:
        while len(self.pending) < count:
            chunk = self.sock.recv(1 << 16)
            assert chunk, "the DevTools endpoint closed the WebSocket"
            self.pending += chunk
        data, self.pending = self.pending[:count], self.pending[count:]
        return data

    def receive(self) -> str:
        message = b""
        while True:
            first, second = self._exactly(2)
            size = second & 0x7F
            if size == 126:
                (size,) = struct.unpack("!H", self._exactly(2))
            elif size == 127:
                (size,) = struct.unpack("!Q", self._exactly(8))
            payload = self._exactly(size)
            opcode = first & 0x0F
            if opcode in (0x9, 0xA):  # ping/pong: Chrome does not ping clients, ignore either
                continue
            assert opcode in (0x0, 0x1), f"unexpected WebSocket opcode {opcode}"
            message += payload
            if first & 0x80:
                return message.decode()

    def close(self) -> None:
        self.sock.close()


class Browser:
    """One headless Chromium with a profile of its own, and a CDP session on its first tab."""

    def __init__(self, binary: str, *, width: int = 1280, height: int = 900) -> None:
        self.profile = Path(tempfile.mkdtemp(prefix="launcher-web-chromium-"))
        argv = [binary, "--headless", "--disable-gpu", "--no-first-run", "--no-default-browser-check"]
        argv += [f"--window-size={width},{height}", "--remote-debugging-port=0", f"--user-data-dir={self.profile}"]
        if os.geteuid() == 0:
            argv.append("--no-sandbox")  # Chromium refuses to start its sandbox as root
        self.proc = subprocess.Popen([*argv, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file = self.profile / "DevToolsActivePort"
        wait_for(lambda: port_file.exists() and port_file.read_text().strip(), timeout=60, what="its DevTools port")
        self.port = int(port_file.read_text().split("\n")[0])
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=30) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        self.ws = WebSocket(page["webSocketDebuggerUrl"])
        self.next_id = 0

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            answer = json.loads(self.ws.receive())
            if answer.get("id") == ident:  # events (no id) and other answers are skipped
                assert "error" not in answer, f"{method}: {answer['error']}"
                return dict(answer.get("result", {}))

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)
        wait_for(lambda: self.evaluate("document.readyState") == "complete", timeout=60, what=f"{url} to load")

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self.ws.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
        shutil.rmtree(self.profile, ignore_errors=True)

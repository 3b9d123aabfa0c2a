"""Shared by the egress tests: real TLS first flights, and the proxy program as its container starts it."""

from __future__ import annotations

import ssl
import sys
from pathlib import Path

import pytest

from launcher.adapters.docker import install_egress_proxy
from launcher.adapters.docker.egress import PROXY_BOOT


def client_hello(server_hostname: str | None) -> bytes:
    """The first flight a real TLS client sends."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    context.check_hostname = server_hostname is not None
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def proxy_command(state_dir: Path) -> list[str]:
    """The program installed under state_dir, started as the proxy's container starts it.

    Here -S as well: the container's python3 has no site-packages to speak of, this one does.
    """
    folder = install_egress_proxy(state_dir)
    return [sys.executable, "-I", "-S", "-c", PROXY_BOOT, str(folder.parent)]

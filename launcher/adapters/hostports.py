"""Whether a host port is free on 127.0.0.1: what the port leases check before they keep one."""

from __future__ import annotations

import socket


def loopback_port_free(port: int) -> bool:
    """True when nothing listens on (or holds) 127.0.0.1:``port`` now; a bind, closed at once.

    SO_REUSEADDR as a server's own bind has it, so connections of an earlier holder lingering in
    TIME_WAIT do not make the port look taken.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

"""The launch service's wire: one request (a length-prefixed JSON document, the caller's three
standard descriptors passed with it) and text lines back (``pid N``, then ``exit N`` or, for a
command killed by a signal, ``signal N``)."""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import struct
from typing import Any

MAX_REQUEST = 4 * 1024 * 1024
_HEADER = struct.Struct("!I")
_FDS = 3


def send_request(sock: socket.socket, request: dict[str, Any], fds: list[int]) -> None:
    data = json.dumps(request).encode()
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sock.sendmsg([_HEADER.pack(len(data))], rights)
    sock.sendall(data)


def receive_request(sock: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """The request and the descriptors that came with it (the caller owns them: close them)."""
    header, ancillary, flags, _ = sock.recvmsg(_HEADER.size, socket.CMSG_SPACE(_FDS * 4))
    fds: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            received = array.array("i")
            received.frombytes(payload[: len(payload) - len(payload) % received.itemsize])
            fds.extend(received)
    try:
        if flags & socket.MSG_CTRUNC or len(fds) != _FDS:
            raise ValueError("a request comes with exactly three descriptors")
        header += _exactly(sock, _HEADER.size - len(header))
        (length,) = _HEADER.unpack(header)
        if length > MAX_REQUEST:
            raise ValueError(f"a request of {length} bytes is more than {MAX_REQUEST}")
        request = json.loads(_exactly(sock, length))
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
    except BaseException:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        raise
    return request, fds


def _exactly(sock: socket.socket, size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = sock.recv(min(left, 65536))
        if not chunk:
            raise ValueError("the request ended early")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)

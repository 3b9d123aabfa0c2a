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

MAX_REQUEST = 4 * 1024 * 1024
_HEADER = struct.Struct("!I")
_FDS = 3


class Request:
    """What a served command takes from its caller (its descriptors come beside it). A plain
    class: the client imports this on every launch, and dataclasses or pydantic cost 10 ms or
    more to import."""

    __slots__ = ("argv", "cwd", "env", "umask")

    def __init__(self, *, argv: list[str], cwd: str, env: dict[str, str], umask: int) -> None:
        self.argv, self.cwd, self.env, self.umask = argv, cwd, env, umask

    def as_json(self) -> bytes:
        return json.dumps({"argv": self.argv, "cwd": self.cwd, "env": self.env, "umask": self.umask}).encode()

    @classmethod
    def parse(cls, data: bytes) -> Request:
        """The request in ``data``, or ValueError: checked before anything is forked for it."""
        found = json.loads(data)
        if not isinstance(found, dict) or set(found) != {"argv", "cwd", "env", "umask"}:
            raise ValueError("a request is a JSON object with argv, cwd, env and umask")
        argv, cwd, env, umask = found["argv"], found["cwd"], found["env"], found["umask"]
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise ValueError("argv is a list of strings")
        if not isinstance(cwd, str) or not cwd.startswith("/"):
            raise ValueError("cwd is an absolute path")
        if not (isinstance(env, dict) and all(isinstance(v, str) for v in env.values())):
            raise ValueError("env maps names to strings")
        if not isinstance(umask, int) or isinstance(umask, bool) or not 0 <= umask <= 0o777:
            raise ValueError("umask is a mode between 0 and 0o777")
        return cls(argv=argv, cwd=cwd, env=env, umask=umask)


def send_request(sock: socket.socket, request: Request, fds: list[int]) -> None:
    data = request.as_json()
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())]
    sock.sendmsg([_HEADER.pack(len(data))], rights)
    sock.sendall(data)


def receive_request(sock: socket.socket) -> tuple[Request, list[int]]:
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
        request = Request.parse(_exactly(sock, length))
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

"""The port relay: forwards the host's connections to a run's listeners. Runs in its own container.

Standard library only: launcher passes this file's text to ``python3 -I -c`` in the egress
proxy's image. Arguments: ``LISTEN=TARGET_IP:TARGET_PORT`` pairs. The relay sits on two
networks: the publishing one (its default route; the engine publishes its listeners on the
host's 127.0.0.1 there) and the run's internal one, where it only ever connects to the given
targets. A connection is accepted only from the publishing network's gateway, which is where
the engine's loopback publishing comes from; anyone else (the run's own containers, other
containers, a neighbour routing to the bridge) is closed at once. Byte copying only: nothing
a run sends is parsed, and the relay opens no connection but to its targets.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading

BUFFER = 65536
CONNECT_TIMEOUT_S = 10.0


def default_gateway(route_table: str) -> str | None:
    for line in route_table.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 2 and fields[1] == "00000000":
            return socket.inet_ntoa(int(fields[2], 16).to_bytes(4, "little"))
    return None


def pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while True:
            data = source.recv(BUFFER)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end, how in ((sink, socket.SHUT_WR), (source, socket.SHUT_RD)):
            with contextlib.suppress(OSError):
                end.shutdown(how)


def handle(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, CONNECT_TIMEOUT_S)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
    back.start()
    pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def serve(listener: socket.socket, target: tuple[str, int], allowed: str) -> None:
    while True:
        try:
            client, peer = listener.accept()
        except OSError:
            continue
        if peer[0] != allowed:
            client.close()
            continue
        try:
            threading.Thread(target=handle, args=(client, target), daemon=True).start()
        except RuntimeError:  # no room for another thread (the pids limit): refuse this one
            client.close()


def main(argv: list[str]) -> int:
    with open("/proc/net/route", encoding="ascii") as table:
        allowed = default_gateway(table.read())
    if allowed is None:
        print("launcher-relay: no default route, so no publishing network", file=sys.stderr, flush=True)
        return 2
    threads = []
    for spec in argv:
        listen, _, target = spec.partition("=")
        host, _, port = target.rpartition(":")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("0.0.0.0", int(listen)))  # noqa: S104 - only the gateway's connections are kept
        listener.listen(128)
        thread = threading.Thread(target=serve, args=(listener, (host, int(port)), allowed), daemon=True)
        thread.start()
        threads.append(thread)
    print(f"launcher-relay: listening, accepting from {allowed}", flush=True)
    for thread in threads:
        thread.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

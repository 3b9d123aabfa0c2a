"""A stand-in for a host on the internet, run in a container on the tests' own network.

Answers every request with 200 and a short body naming itself, and appends what it received
(request line and headers) as one JSON line to RECORD, so a test can see exactly what reached
the upstream. With --tls CERT KEY it speaks HTTPS (the API-key upstream).

Usage: python3 upstream.py NAME PORT RECORD [--tls CERT KEY]
"""

from __future__ import annotations

import json
import ssl
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    name, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            entry = {
                "server": name,
                "request_line": self.requestline,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body_bytes": len(body),
                "client": self.client_address[0],
            }
            with open(record, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")
            reply = f"hello from {name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        do_GET = do_POST = do_PUT = _answer

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    if "--tls" in sys.argv:
        at = sys.argv.index("--tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[at + 1], sys.argv[at + 2])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"upstream {name} listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

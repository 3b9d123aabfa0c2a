"""A stand-in for a model provider: an OpenAI-compatible chat-completions endpoint, scripted.

Not a model. It answers ``POST …/chat/completions`` with replies fixed in advance, so a real
agent CLI (aider) can be run end to end offline: the edit it should make, and the commit
message it asks for afterwards. It runs in a container on the tests' own "internet" network,
standard library only, and appends every request it receives (path, headers, the messages'
roles and sizes) as one JSON line to RECORD, so a test sees exactly what reached the provider,
the Authorization header the egress proxy added included.

SCRIPT is a JSON file: ``{"edit": "<the reply to a coding request>", "commit": "<the reply
when the request asks for a commit message>"}``. A request whose system message mentions a
commit message gets "commit"; every other request gets "edit". ``"stream": true`` is answered
as server-sent events (one chunk with the whole text, then ``[DONE]``), else as one JSON body.

Usage: python3 model_standin.py PORT RECORD SCRIPT [--tls CERT KEY]
"""

from __future__ import annotations

import json
import ssl
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MAX_BODY = 4 * 1024 * 1024


def wants_commit_message(messages: list[dict[str, Any]]) -> bool:
    system = " ".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    return "commit message" in system.lower()


def completion(model: str, text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-standin",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def chunks(model: str, text: str) -> list[dict[str, Any]]:
    base = {"id": "chatcmpl-standin", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    return [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]


def main() -> None:
    port, record, script_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    with open(script_path, encoding="utf-8") as handle:
        script = json.load(handle)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _record(self, entry: dict[str, Any]) -> None:
            entry.update(
                request_line=self.requestline,
                headers=[[k, v] for k, v in self.headers.items()],
                client=self.client_address[0],
            )
            with open(record, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry) + "\n")

        def _send(self, code: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._record({"kind": "get"})
            if self.path.rstrip("/").endswith("/models"):
                self._send(200, json.dumps({"object": "list", "data": []}).encode())
            else:
                self._send(404, b'{"error": {"message": "not found"}}')

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if not self.path.split("?")[0].endswith("/chat/completions") or length > MAX_BODY:
                self._record({"kind": "refused"})
                self._send(404, b'{"error": {"message": "only chat completions here"}}')
                return
            request = json.loads(self.rfile.read(length) or b"{}")
            messages = request.get("messages") or []
            reply_kind = "commit" if wants_commit_message(messages) else "edit"
            model = str(request.get("model", "standin"))
            self._record(
                {
                    "kind": "chat",
                    "reply": reply_kind,
                    "model": model,
                    "stream": bool(request.get("stream")),
                    "messages": [[m.get("role"), len(str(m.get("content", "")))] for m in messages],
                    "last_user": next(
                        (str(m.get("content", ""))[-2000:] for m in reversed(messages) if m.get("role") == "user"), ""
                    ),
                }
            )
            text = str(script[reply_kind])
            if not request.get("stream"):
                self._send(200, json.dumps(completion(model, text)).encode())
                return
            body = b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks(model, text)) + b"data: [DONE]\n\n"
            self._send(200, body, "text/event-stream")

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    if "--tls" in sys.argv:
        at = sys.argv.index("--tls")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(sys.argv[at + 1], sys.argv[at + 2])
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"model stand-in listening on {port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()

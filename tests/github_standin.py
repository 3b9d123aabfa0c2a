"""A stand-in for the GitHub REST endpoints launcher calls: NOT GitHub.

A small threaded HTTP server on 127.0.0.1 (an ephemeral port) that implements only
    GET   {prefix}/repos/{owner}/{repo}/pulls?head={owner}:{branch}&state=open
    POST  {prefix}/repos/{owner}/{repo}/pulls
    PATCH {prefix}/repos/{owner}/{repo}/pulls/{number}
with GitHub's response shapes (number, html_url, draft, state, head.ref/label, base.ref, title,
body), GitHub's error bodies ({"message", "errors", "documentation_url"}), a bearer-token
check (401 "Bad credentials"), 404 for a repository it does not hold, and 422 for a second
open pull request from the same head. Pull requests live in memory. ``fail_next(n)`` makes the
next n requests answer 502 (or another status, with headers such as Retry-After) to prove
retries. ``prefix`` = "/api/v3" serves the paths as GitHub Enterprise does.

Use the ``github_standin`` fixture (import it into a test module until tests/conftest.py
registers this module as a plugin).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

STANDIN_TOKEN = "ghp_standin0123456789abcdefSECRET"  # a test token, for the stand-in only
DOCS = "https://docs.github.com/rest"


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # names in lower case, without Authorization
    authorized: bool
    body: Any


@dataclass
class _Failure:
    status: int
    headers: dict[str, str]
    message: str


@dataclass
class GitHubStandIn:
    token: str = STANDIN_TOKEN
    prefix: str = ""
    repos: set[str] = field(default_factory=lambda: {"octo/demo"})
    pulls: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    seen: list[SeenRequest] = field(default_factory=list)
    draft_supported: bool = True
    _failures: list[_Failure] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def api_url(self) -> str:
        assert self._server is not None, "the stand-in is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}{self.prefix}"

    def fail_next(
        self, count: int, status: int = 502, headers: dict[str, str] | None = None, message: str = ""
    ) -> None:
        with self._lock:
            for _ in range(count):
                self._failures.append(_Failure(status, dict(headers or {}), message or f"stand-in failure {status}"))

    def open_pulls(self, repo: str = "octo/demo") -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.pulls.get(repo, []) if p["state"] == "open"]

    def all_pulls(self, repo: str = "octo/demo") -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self.pulls.get(repo, [])]

    def close_pull(self, number: int, repo: str = "octo/demo") -> None:
        with self._lock:
            for pull in self.pulls.get(repo, []):
                if pull["number"] == number:
                    pull["state"] = "closed"

    def __enter__(self) -> GitHubStandIn:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                standin._handle(self, "GET")

            def do_POST(self) -> None:
                standin._handle(self, "POST")

            def do_PATCH(self) -> None:
                standin._handle(self, "PATCH")

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the test output is the tests'

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-standin", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # -- the endpoints -------------------------------------------------------------------

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        split = urllib.parse.urlsplit(req.path)
        length = int(req.headers.get("Content-Length") or 0)
        raw = req.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        authorized = req.headers.get("Authorization") == f"Bearer {self.token}"
        headers = {k.lower(): v for k, v in req.headers.items() if k.lower() != "authorization"}
        with self._lock:
            self.seen.append(
                SeenRequest(method, split.path, urllib.parse.parse_qs(split.query), headers, authorized, body)
            )
            failure = self._failures.pop(0) if self._failures else None
        if failure is not None:
            self._send(req, failure.status, {"message": failure.message}, failure.headers)
            return
        if not authorized:
            self._send(req, 401, {"message": "Bad credentials", "documentation_url": DOCS})
            return
        if not split.path.startswith(self.prefix + "/repos/"):
            self._send(req, 404, {"message": "Not Found", "documentation_url": DOCS})
            return
        parts = split.path[len(self.prefix) :].strip("/").split("/")
        if len(parts) < 4 or parts[3] != "pulls" or f"{parts[1]}/{parts[2]}" not in self.repos:
            self._send(req, 404, {"message": "Not Found", "documentation_url": DOCS})
            return
        repo = f"{parts[1]}/{parts[2]}"
        with self._lock:
            status, answer = self._route(method, repo, parts[4:], urllib.parse.parse_qs(split.query), body)
        self._send(req, status, answer)

    def _route(
        self, method: str, repo: str, rest: list[str], query: dict[str, list[str]], body: Any
    ) -> tuple[int, Any]:
        pulls = self.pulls.setdefault(repo, [])
        owner = repo.split("/")[0]
        if method == "GET" and not rest:
            state = query.get("state", ["open"])[0]
            head = query.get("head", [None])[0]
            found = [p for p in pulls if state == "all" or p["state"] == state]
            if head is not None:
                found = [p for p in found if p["head"]["label"] == head]
            return 200, sorted(found, key=lambda p: -p["number"])
        if method == "POST" and not rest:
            if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ("title", "head", "base")):
                return 422, _invalid("Invalid request.", "missing title, head or base")
            if body.get("draft") and not self.draft_supported:
                return 422, _invalid("Validation Failed", "Draft pull requests are not supported in this repository.")
            branch = body["head"].split(":", 1)[-1]
            label = f"{owner}:{branch}"
            if any(p["state"] == "open" and p["head"]["label"] == label for p in pulls):
                return 422, _invalid("Validation Failed", f"A pull request already exists for {label}.")
            number = max((p["number"] for p in pulls), default=0) + 1
            pull = {
                "number": number,
                "html_url": f"https://github.standin.invalid/{repo}/pull/{number}",
                "url": f"{self.api_url}/repos/{repo}/pulls/{number}",
                "state": "open",
                "draft": bool(body.get("draft", False)),
                "title": body["title"],
                "body": body.get("body"),
                "head": {"ref": branch, "label": label},
                "base": {"ref": body["base"], "label": f"{owner}:{body['base']}"},
            }
            pulls.append(pull)
            return 201, pull
        if method == "PATCH" and len(rest) == 1 and rest[0].isdigit():
            for pull in pulls:
                if pull["number"] == int(rest[0]):
                    if isinstance(body, dict):
                        pull.update({k: body[k] for k in ("title", "body", "state") if k in body})
                    return 200, pull
            return 404, {"message": "Not Found", "documentation_url": DOCS}
        return 404, {"message": "Not Found", "documentation_url": DOCS}

    @staticmethod
    def _send(req: BaseHTTPRequestHandler, status: int, answer: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(answer).encode("utf-8")
        req.send_response(status)
        req.send_header("Content-Type", "application/json; charset=utf-8")
        req.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            req.send_header(name, value)
        req.end_headers()
        req.wfile.write(data)


def _invalid(message: str, detail: str) -> dict[str, Any]:
    return {
        "message": message,
        "errors": [{"resource": "PullRequest", "code": "custom", "message": detail}],
        "documentation_url": DOCS,
    }


@pytest.fixture
def github_standin() -> Iterator[GitHubStandIn]:
    """A running stand-in of GitHub's pull request endpoints, holding the repository octo/demo."""
    with GitHubStandIn() as standin:
        yield standin

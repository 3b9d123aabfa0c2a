"""A stand-in forge for tests: bare repositories served over git's smart HTTP, with basic auth.

A STAND-IN, not a forge: ``git http-backend`` (git's own CGI, the server half GitHub's and
GitLab's HTTPS remotes speak) behind a small threaded Python HTTP server on 127.0.0.1, on an
ephemeral port, for the life of one test. It checks a user and token made for that test on
every request (401 otherwise) and can be told to answer 503 to the next N requests, so a
transient failure is deterministic. It keeps a log of what it was asked (method, path, user,
status): never the token.

Helpers make a bare repository, list its branches, read a ref and move a ref behind
launcher's back (a new commit on the forge's side, as another person pushing would).

Used as a pytest plugin (``pytest_plugins = ["forgekit"]`` in tests/conftest.py): the fixture
is ``forge``.
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

__all__ = ["Forge", "ForgeRequest", "forge"]


@dataclass(frozen=True)
class ForgeRequest:
    method: str
    path: str
    user: str | None
    status: int


def _git(*args: str, cwd: Path | None = None, input_bytes: bytes | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="someone else",
        GIT_AUTHOR_EMAIL="else@example.invalid",
        GIT_COMMITTER_NAME="someone else",
        GIT_COMMITTER_EMAIL="else@example.invalid",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=str(cwd or "/"),
    )
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, input=input_bytes, capture_output=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
    return proc.stdout.decode().strip()


@dataclass
class Forge:
    """Bare repositories under ``root``, served at ``http://127.0.0.1:PORT/<name>.git``."""

    root: Path
    user: str
    token: str
    port: int = 0
    requests: list[ForgeRequest] = field(default_factory=list)
    _fail_next: int = 0
    _fail_status: int = 503
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- what tests set up and look at -------------------------------------------------------

    def create_repo(self, name: str, *, default_branch: str = "main") -> Path:
        """A bare repository ``<name>.git``, receive-pack on (the server checks the user)."""
        path = self.root / f"{name}.git"
        _git("init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(path))
        _git("config", "http.receivepack", "true", cwd=path)
        return path

    def url(self, name: str, *, with_user: bool = True) -> str:
        """The repository's URL; with its user (never its token) git asks only for the password."""
        userinfo = f"{self.user}@" if with_user else ""
        return f"http://{userinfo}127.0.0.1:{self.port}/{name}.git"

    def branches(self, name: str) -> dict[str, str]:
        """Branch name -> commit on the forge."""
        return {ref.removeprefix("refs/heads/"): sha for ref, sha in self.refs(name, "refs/heads/").items()}

    def refs(self, name: str, prefix: str = "refs/") -> dict[str, str]:
        out = _git("for-each-ref", "--format=%(refname) %(objectname)", prefix, cwd=self.root / f"{name}.git")
        found = {}
        for line in out.splitlines():
            ref, _, sha = line.partition(" ")
            found[ref] = sha
        return found

    def ref(self, name: str, ref: str) -> str | None:
        return self.refs(name, ref).get(ref)

    def move_ref(self, name: str, ref: str, *, message: str = "someone else's commit") -> str:
        """Someone else pushes: a new commit on top of ``ref`` (or a root commit); its id."""
        repo = self.root / f"{name}.git"
        old = self.ref(name, ref)
        tree = _git("rev-parse", f"{old}^{{tree}}", cwd=repo) if old else _git("mktree", cwd=repo, input_bytes=b"")
        parents = ["-p", old] if old else []
        new = _git("commit-tree", tree, *parents, "-m", message, cwd=repo)
        _git("update-ref", ref, new, cwd=repo)
        return new

    def delete_ref(self, name: str, ref: str) -> None:
        _git("update-ref", "-d", ref, cwd=self.root / f"{name}.git")

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` (a forge having a bad minute)."""
        with self._lock:
            self._fail_next, self._fail_status = count, status

    def served(self, status: int) -> int:
        with self._lock:
            return sum(1 for r in self.requests if r.status == status)

    # -- serving -------------------------------------------------------------------------------

    def _take_failure(self) -> int | None:
        with self._lock:
            if self._fail_next > 0:
                self._fail_next -= 1
                return self._fail_status
            return None

    def _log(self, request: ForgeRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _authorised(self, header: str | None) -> str | None:
        if not header or not header.startswith("Basic "):
            return None
        try:
            user, _, token = base64.b64decode(header[6:]).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return None
        ok = secrets.compare_digest(user, self.user) and secrets.compare_digest(token, self.token)
        return user if ok else None


def _handler(forge: Forge) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        self.rfile.readline()
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            body = self._body() if self.command == "POST" else b""
            path, _, query = self.path.partition("?")
            failure = forge._take_failure()
            if failure is not None:
                forge._log(ForgeRequest(self.command, path, None, failure))
                self._reply(failure, b"the stand-in forge is having a bad minute\n", {"Content-Type": "text/plain"})
                return
            user = forge._authorised(self.headers.get("Authorization"))
            if user is None:
                forge._log(ForgeRequest(self.command, path, None, 401))
                self._reply(401, b"authentication required\n", {"WWW-Authenticate": 'Basic realm="forgekit"'})
                return
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "GIT_PROJECT_ROOT": str(forge.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "REMOTE_USER": user,
                "REMOTE_ADDR": self.client_address[0],
                "GIT_CONFIG_NOSYSTEM": "1",
                "HOME": str(forge.root),
            }
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            if self.headers.get("Git-Protocol"):
                env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
            proc = subprocess.run(
                ["git", "http-backend"], input=body, env=env, capture_output=True, check=False, timeout=120
            )
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            if not _:
                head, _, payload = proc.stdout.partition(b"\n\n")
            status, headers = 200, {}
            for line in head.decode("latin-1").splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key:
                    headers[key.strip()] = value.strip()
            if proc.returncode != 0 and status == 200:
                status, payload = 500, proc.stderr
            forge._log(ForgeRequest(self.command, path, user, status))
            self._reply(status, payload, headers)

    return Handler


@pytest.fixture
def forge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Forge]:
    """A stand-in forge on loopback with a user and token made for this test."""
    made = Forge(
        root=tmp_path_factory.mktemp("forge"),
        user=f"tester-{secrets.token_hex(3)}",
        token=f"forgekit-{secrets.token_urlsafe(24)}",
    )
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(made))
    server.daemon_threads = True
    made.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="forgekit", daemon=True)
    thread.start()
    try:
        yield made
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# -- as a program: the test cluster's forge (scripts/cluster.sh) --------------------------------


def serve(argv: list[str] | None = None) -> None:
    """``python3 forgekit.py serve --host H --port P --root DIR --user U --token-file F``.

    The same server as the ``forge`` fixture, for as long as the process lives: the stand-in forge
    of the test cluster, on an address the boxes reach. The token is read from a file (never an
    argument, which ``ps`` would show). Each request is logged to stdout (never the token).
    """
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="forgekit.py", description="the stand-in forge, as a server")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("serve", help="serve the bare repositories under --root over git's smart HTTP")
    cmd.add_argument("--host", default="127.0.0.1")
    cmd.add_argument("--port", type=int, default=8080)
    cmd.add_argument("--root", type=Path, required=True, help="folder of the bare repositories (<name>.git)")
    cmd.add_argument("--user", required=True)
    cmd.add_argument("--token-file", type=Path, required=True)
    args = parser.parse_args(argv)
    token = args.token_file.read_text().strip()
    if not token:
        parser.error(f"{args.token_file} is empty")
    args.root.mkdir(parents=True, exist_ok=True)

    class _LoggedForge(Forge):
        def _log(self, request: ForgeRequest) -> None:
            super()._log(request)
            print(f"{request.method} {request.path} {request.user or '-'} {request.status}", flush=True)

    made = _LoggedForge(root=args.root.resolve(), user=args.user, token=token, port=args.port)
    server = ThreadingHTTPServer((args.host, args.port), _handler(made))
    server.daemon_threads = True
    print(f"forgekit: serving {made.root} on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    serve()

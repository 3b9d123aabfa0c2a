"""`launcher web`: the pages, the token, read-only, escaping, the log's SSE stream, /metrics.

A real uvicorn on a free loopback port serves the real app over a case root whose run records
are made directly in its real coordinator (no Docker); requests are plain HTTP (urllib).
"""

from __future__ import annotations

import json
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPResponse
from pathlib import Path

import pytest
from fakes import FakeWorld
from helpers import invoke, wait_for

pytest.importorskip("uvicorn", reason="the `web` extra (uvicorn) is not installed")
import uvicorn

from launcher.cli.app_context import Application
from launcher.core.transitions import RunState
from launcher.models import NewRun, utcnow
from launcher.web.app import create_app

TOKEN = "t0ken-for-tests"
HOSTILE = b'<script>alert("owned")</script><img src=x onerror=alert(1)> & "quotes"\n'


@dataclass
class Served:
    world: FakeWorld
    base: str  # http://127.0.0.1:PORT/TOKEN

    def get(self, path: str, *, method: str = "GET") -> tuple[int, dict[str, str], str]:
        request = urllib.request.Request(self.base + path, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                return answer.status, dict(answer.headers), answer.read().decode()
        except urllib.error.HTTPError as refused:
            return refused.code, dict(refused.headers), refused.read().decode()


def app_of(world: FakeWorld) -> Application:
    return Application(str(world.root), None).read_only()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    from launcher.core.metrics import coordinator_registry

    world = FakeWorld.make(tmp_path)
    metrics_app = app_of(world)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    app = create_app(lambda: app_of(world), TOKEN, metrics=coordinator_registry(metrics_app.store))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=30, what="uvicorn to start")
    try:
        yield Served(world, f"http://127.0.0.1:{sock.getsockname()[1]}/{TOKEN}")
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
        metrics_app.close()
        world.close()


def add_run(world: FakeWorld, log: bytes, *, state: RunState, title: str = "fix it") -> str:
    run = world.store.create_run(
        NewRun(task_id=world.new_task(title), image=None, owner=None, worktrees_dir=str(world.root / "wt"))
    )
    live = state in {RunState.CREATED, RunState.RUNNING}
    world.store.update_run(run.id, state=state, ended_at=None if live else utcnow(), exit_code=None if live else 0)
    path = log_path(world, run.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(log)
    return run.id


def log_path(world: FakeWorld, run_id: str, *, egress: bool = False) -> Path:
    app = app_of(world)
    try:
        return app.runs.log_path(world.store.get_run(run_id), egress=egress)
    finally:
        app.close()


def test_every_request_needs_the_token_and_only_get_passes(served: Served) -> None:
    assert served.get("/")[0] == 200
    wrong = served.base.rsplit("/", 1)[0]
    for path in ("/", "/wrong-token/", f"/{TOKEN[:-1]}/", "/runs"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(wrong + path, timeout=30)
        assert refused.value.code == 404, path
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = served.get("/", method=method)
        assert status == 405, method
        assert headers["allow"] == "GET, HEAD"


def test_pages_carry_a_strict_content_security_policy(served: Served) -> None:
    _, headers, _ = served.get("/")
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"] == "no-referrer"


def test_the_run_list_shows_live_runs_and_filters(served: Served) -> None:
    live = add_run(served.world, b"working\n", state=RunState.RUNNING)
    ended = add_run(served.world, b"done\n", state=RunState.EXITED)

    _, _, page = served.get("/")
    assert live in page
    assert ended not in page
    _, _, everything = served.get("/?all=1")
    assert live in everything
    assert ended in everything
    _, _, exited = served.get("/?state=exited")
    assert ended in exited
    assert live not in exited
    _, _, by_id = served.get(f"/?all=1&id={ended}")
    assert ended in by_id
    assert live not in by_id
    served.world.store.update_run(ended, details={"labels": {"team": "payments"}})
    _, _, labelled = served.get("/?all=1&label=team%3Dpayments")
    assert ended in labelled
    assert live not in labelled
    _, _, other_team = served.get("/?all=1&label=team%3Dsearch")
    assert ended not in other_team
    status, _, bad = served.get("/?filter=colour%3Dred")
    assert status == 400
    assert "colour" in bad


def test_live_runs_show_their_leased_ports(served: Served) -> None:
    live = add_run(served.world, b"serving\n", state=RunState.RUNNING)
    _, _, before = served.get("/")
    assert "127.0.0.1:28123" not in before
    port = {"name": "web", "host_port": 28123, "container_port": 28123, "url": "http://127.0.0.1:28123"}
    served.world.store.update_run(live, details={"ports": [port]})

    _, _, page = served.get("/")
    _, _, run_page = served.get(f"/runs/{live}")

    assert "web→http://127.0.0.1:28123" in page
    assert "web→http://127.0.0.1:28123" in run_page


def test_agent_output_is_escaped_everywhere(served: Served) -> None:
    run_id = add_run(served.world, b"fine\n" + HOSTILE, state=RunState.RUNNING, title='<b onclick="x()">title</b>')
    egress = log_path(served.world, run_id, egress=True)
    egress.parent.mkdir(parents=True, exist_ok=True)
    egress.write_text(json.dumps({"host": "<script>h()</script>", "port": 443, "decision": "deny"}) + "\n")

    for path in (f"/runs/{run_id}", "/tasks", "/?all=1"):
        _, _, page = served.get(path)
        for raw in ("<script>alert", "<img", "<b onclick"):
            assert raw not in page, path
        assert "<script>h()" not in page, path
        assert page.count("<script") == 1, path  # only the page's own script tag
    _, _, run_page = served.get(f"/runs/{run_id}")
    assert "&lt;script&gt;alert(&quot;owned&quot;)&lt;/script&gt;" in run_page
    assert "&lt;script&gt;h()&lt;/script&gt;:443" in run_page
    status, headers, text = served.get(f"/runs/{run_id}/log.txt")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert text == "fine\n" + HOSTILE.decode()


def test_the_log_streams_new_bytes_then_ends_with_the_run(served: Served) -> None:
    run_id = add_run(served.world, b"first\n", state=RunState.RUNNING)
    path = log_path(served.world, run_id)
    request = urllib.request.Request(served.base + f"/runs/{run_id}/log/events?from=0")
    with urllib.request.urlopen(request, timeout=30) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        assert next_event(stream) == {"id": "6", "data": "first\n"}
        with path.open("ab") as log:
            log.write(b"second <script>\n")
        assert next_event(stream) == {"id": "22", "data": "second <script>\n"}
        served.world.store.update_run(run_id, state=RunState.EXITED, ended_at=utcnow(), exit_code=0)
        assert next_event(stream) == {"event": "end", "data": "exited"}
    # An EventSource that reconnects sends Last-Event-ID: the stream resumes there.
    again = urllib.request.Request(served.base + f"/runs/{run_id}/log/events", headers={"Last-Event-ID": "6"})
    with urllib.request.urlopen(again, timeout=30) as stream:
        assert next_event(stream) == {"id": "22", "data": "second <script>\n"}


def next_event(stream: HTTPResponse) -> dict[str, str]:
    """The next SSE event's fields (comments skipped), `data` decoded from its JSON."""
    event: dict[str, str] = {}
    while True:
        line = stream.readline().decode()
        assert line, "the stream ended"
        line = line.rstrip("\n")
        if not line:
            if event:
                event["data"] = json.loads(event["data"])
                return event
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(": ")
        event[key] = value


def test_run_page_shows_transitions_diff_note_and_egress(served: Served) -> None:
    run_id = add_run(served.world, b"x\n", state=RunState.EXITED)
    egress = log_path(served.world, run_id, egress=True)
    egress.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        {"ts": "t1", "method": "CONNECT", "host": "pypi.org", "port": 443, "decision": "allow", "reason": "listed"},
        {"ts": "t2", "method": "CONNECT", "host": "evil.example", "port": 443, "decision": "deny", "reason": "nope"},
    ]
    egress.write_text("".join(json.dumps(d) + "\n" for d in lines))

    status, _, page = served.get(f"/runs/{run_id}")
    assert status == 200
    assert 'id="events"' in page
    assert "exited" in page
    assert "evil.example:443" in page
    assert '<span class="deny">deny</span>' in page
    assert "no base commit or repository recorded" in page  # the diff's own message, via results.diff
    assert 'data-stream="' not in page  # an ended run's log does not stream
    assert served.get("/runs/nope-9.9")[0] == 404


def test_task_history_and_the_batch_queue(served: Served) -> None:
    run_id = add_run(served.world, b"x\n", state=RunState.EXITED, title="queued one")
    task_id = served.world.store.get_run(run_id).task_id
    served.world.store.enqueue([task_id])

    _, _, task_page = served.get(f"/tasks/{task_id}")
    assert 'id="transitions"' in task_page
    assert run_id in task_page
    assert task_page.count("<tr>") >= 3  # header rows and at least the creation transition
    _, _, queue = served.get("/queue")
    assert task_id in queue
    assert "waiting" in queue
    assert "1 queued" in queue


def test_metrics_are_served_behind_the_token(served: Served) -> None:
    add_run(served.world, b"x\n", state=RunState.RUNNING)
    status, headers, text = served.get("/metrics")
    assert status == 200
    assert headers["content-type"].startswith("text/plain")
    assert "launcher_live_runs 1.0" in text


def test_without_the_extra_web_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "starlette" else real(name, *a))
    result = invoke(["--root", str(tmp_path), "web"])
    assert result.exit_code == 6
    assert "missing: starlette" in result.stderr
    assert "pip install 'worktree-launcher[web]'" in result.stderr


def test_the_cli_prints_the_url_first_and_warns_off_loopback(tmp_path: Path) -> None:
    import subprocess
    import sys

    from helpers import clean_env

    root = tmp_path / "case"
    root.mkdir()
    argv = [sys.executable, "-m", "launcher", "--root", str(root), "web", "--host", "0.0.0.0"]
    web = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env())
    try:
        assert web.stdout is not None
        assert web.stderr is not None
        url = web.stdout.readline().decode().strip()
        assert url.startswith("http://0.0.0.0:")
        token = url.rstrip("/").rsplit("/", 1)[1]
        assert len(token) >= 32
        assert "not loopback" in web.stderr.readline().decode()
        with urllib.request.urlopen(url.replace("0.0.0.0", "127.0.0.1"), timeout=30) as answer:
            assert answer.status == 200
            assert 'id="runs"' in answer.read().decode()
        assert not (root / ".launcher").exists()  # read-only: no state store made where none was
    finally:
        web.terminate()
        web.wait(timeout=30)

"""Per-run services ([run.services.NAME], --service): on the run's own network, healthy before the
agent starts, reachable by name, gone (logs kept) when the run settles; a service that never
becomes healthy is its own result (exit 20) and leaves nothing behind."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import docker_client, wait_for
from runkit import Case, facts, make_repo

from launcher.adapters.store.sqlite import SqliteCoordinator

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PG_IMAGE = "launcher/postgres:15"
PASSWORD = "pw-for-tests-only"
PORT_RANGE = "29200-29299"

# agent-base has python3 but no PostgreSQL client: the wire protocol with SCRAM-SHA-256, by hand.
PG_CLIENT = r"""
import base64, hashlib, hmac, os, socket, struct
def frame(kind, body):
    return kind + struct.pack("!I", len(body) + 4) + body
def receive(conn):
    head = b""
    while len(head) < 5:
        chunk = conn.recv(5 - len(head))
        if not chunk:
            raise SystemExit("connection closed")
        head += chunk
    size, body = struct.unpack("!I", head[1:])[0] - 4, b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    return head[:1], body
def connect(host, port, password, db):
    conn = socket.create_connection((host, port), 10)
    body = struct.pack("!I", 196608) + b"user\0postgres\0database\0" + db.encode() + b"\0\0"
    conn.sendall(struct.pack("!I", len(body) + 4) + body)
    first = "n=,r=" + base64.b64encode(os.urandom(18)).decode()
    while True:
        kind, body = receive(conn)
        if kind == b"E":
            raise SystemExit(body.decode(errors="replace"))
        if kind != b"R":
            continue
        code = struct.unpack("!I", body[:4])[0]
        if code == 10:
            initial = ("n,," + first).encode()
            conn.sendall(frame(b"p", b"SCRAM-SHA-256\0" + struct.pack("!I", len(initial)) + initial))
        elif code == 11:
            server = body[4:].decode()
            fields = dict(kv.split("=", 1) for kv in server.split(","))
            salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(fields["s"]), int(fields["i"]))
            client_key = hmac.new(salted, b"Client Key", "sha256").digest()
            final = "c=biws,r=" + fields["r"]
            said = ",".join([first, server, final]).encode()
            signature = hmac.new(hashlib.sha256(client_key).digest(), said, "sha256").digest()
            proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, signature))).decode()
            conn.sendall(frame(b"p", (final + ",p=" + proof).encode()))
        elif code == 0:
            break
    while receive(conn)[0] != b"Z":
        pass
    return conn
def query(conn, sql):
    conn.sendall(frame(b"Q", sql.encode() + b"\0"))
    rows = []
    while True:
        kind, body = receive(conn)
        if kind == b"E":
            raise SystemExit("SQL error: " + body.decode(errors="replace"))
        if kind == b"D":
            count, at, row = struct.unpack("!H", body[:2])[0], 2, []
            for _ in range(count):
                size = struct.unpack("!i", body[at:at + 4])[0]
                at += 4
                row.append(None if size < 0 else body[at:at + size].decode())
                at += max(size, 0)
            rows.append(row)
        if kind == b"Z":
            return rows
"""

AGENT = (
    PG_CLIENT
    + r"""
conn = connect("db", 5432, os.environ["DB_PASSWORD"], "app")
me = os.environ["CASE_RUN_ID"]
query(conn, "CREATE TABLE seen (run text)")
query(conn, f"INSERT INTO seen VALUES ('{me}')")
print("FACT rows=" + ",".join(r[0] for r in query(conn, "SELECT run FROM seen ORDER BY run")), flush=True)
try:
    socket.create_connection(("1.1.1.1", 80), 3)
    print("FACT internet=open", flush=True)
except OSError as exc:
    print("FACT internet=" + type(exc).__name__, flush=True)
# Held open until the host has looked through the published port.
while not os.path.exists("/workspace/.case/host-looked"):
    import time; time.sleep(0.1)
"""
)


def pg_image() -> str:
    client = docker_client()
    try:
        client.images.get(PG_IMAGE)
    except Exception:
        pytest.skip(f"this machine lacks the image {PG_IMAGE} (docker build -t {PG_IMAGE} images/postgres)")
    finally:
        client.close()
    return PG_IMAGE


def config(root: Path, extra: str = "") -> None:
    (root / "launcher.toml").write_text(
        f"""[network]
port_range = "{PORT_RANGE}"

[run.services.db]
image = "{pg_image()}"
env = {{ POSTGRES_PASSWORD = "{PASSWORD}", POSTGRES_DB = "app", PGDATA = "/var/lib/postgresql/data/db" }}
tmpfs = ["/var/lib/postgresql/data", "/run/postgresql"]
health_timeout = 120
{extra}"""
    )


def leases_of(root: Path) -> dict[int, tuple[str, str]]:
    with SqliteCoordinator(root / ".launcher" / "state.db") as store:
        return store.port_leases()


def host_query(port: int, sql: str) -> list[list[str | None]]:
    scope: dict[str, object] = {}
    exec(PG_CLIENT, scope)  # the test's own client, as the agent runs it
    conn = scope["connect"]("127.0.0.1", port, PASSWORD, "app")  # type: ignore[operator]
    try:
        return scope["query"](conn, sql)  # type: ignore[operator, no-any-return]
    finally:
        conn.close()


def test_two_runs_each_get_their_own_database_by_name_and_nothing_is_left(case: Case, tmp_path: Path) -> None:
    config(case.root)
    repo = make_repo(tmp_path / "repo")
    tasks = [case.create_task(repo, f"db {n}") for n in range(2)]
    procs = [
        case.popen(
            "run",
            task,
            "--port",
            "pg=db:5432",
            "--",
            "env",
            f"DB_PASSWORD={PASSWORD}",
            "python3",
            "-c",
            AGENT,
            stdout=subprocess.PIPE,
        )
        for task in tasks
    ]
    runs = [case.wait_running(task, timeout=240) for task in tasks]
    client = docker_client()
    try:
        for run_id in runs:
            record = case.run_record(run_id)
            (service,) = record["details"]["services"]
            assert service["state"] == "healthy"
            container = client.containers.get(service["container"])
            host = container.attrs["HostConfig"]
            assert container.attrs["Config"]["User"] not in ("", "0", "root", "0:0")
            assert host["CapDrop"] == ["ALL"]
            assert host["ReadonlyRootfs"] is True
            assert "no-new-privileges" in host["SecurityOpt"]
            assert host["PortBindings"] in (None, {}), "a service itself publishes nothing"
            assert set(container.attrs["NetworkSettings"]["Networks"]) == {record["details"]["egress"]["network"]}
            assert container.labels["launcher.run-id"] == run_id
            # Through the published port, from the host: the run's own row, once the agent wrote it.
            port = int(record["ports"]["pg"].rsplit(":", 1)[1])
            rows = wait_for(
                lambda p=port: _rows_or_none(p),
                timeout=120,
                what=f"{run_id}'s row in its database",  # type: ignore[misc]
            )
            assert rows == [[run_id]], rows
            worktree = Path(record["worktree"])
            (worktree / ".case" / "host-looked").touch()
    finally:
        client.close()
    for proc in procs:
        proc.communicate(timeout=240)
        assert proc.returncode == 0
    for run_id in runs:
        seen = facts(case.ok("logs", run_id).stdout)
        assert seen["rows"] == run_id, seen  # its own database: no other run's row
        assert seen["internet"] != "open", seen
        record = case.run_record(run_id)
        log = Path(record["details"]["services"][0]["log"])
        assert b"database system is ready to accept connections" in log.read_bytes()
    assert leases_of(case.root) == {}
    assert not case.containers()


def _rows_or_none(port: int) -> list[list[str | None]] | None:
    try:
        rows = host_query(port, "SELECT run FROM seen")
    except (OSError, SystemExit):
        return None
    return rows or None


def test_a_service_that_never_becomes_healthy_ends_the_run_with_exit_20_and_leaves_nothing(
    case: Case, tmp_path: Path
) -> None:
    config(
        case.root,
        """
[run.services.broken]
image = "launcher/agent-base:latest"
command = ["sleep", "600"]
healthcheck = ["exit 1"]
health_timeout = 5
auto = false
""",
    )
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "broken service")
    result = case.cli("run", task, "--service", "broken", "--port", "web", "--json", "--", "touch", "agent-ran")
    assert result.exit_code == 20, result.stderr
    record = json.loads(result.stdout)
    assert record["state"] == "failed"
    failure = record["details"]["service_failure"]
    assert failure["name"] == "broken", failure
    assert "health check failed" in failure["reason"] or "not healthy" in failure["reason"], failure
    assert record["details"].get("harvest", {}).get("commits", []) == []
    assert any("service broken did not become healthy" in e for e in record["details"]["errors"])
    assert leases_of(case.root) == {}
    assert not case.containers()
    assert case.json("gc")["actions"] == [] or all(
        a["kind"] == "remove-egress-proxy" for a in case.json("gc")["actions"]
    )


def test_an_unknown_service_or_one_with_network_none_is_refused_before_anything(case: Case, tmp_path: Path) -> None:
    config(case.root)
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "refused")
    unknown = case.cli("run", task, "--service", "nosuch", "--", "true")
    assert unknown.exit_code == 6, unknown.stderr
    assert "no [run.services.nosuch]" in unknown.stderr
    none = case.cli("run", task, "--network", "none", "--", "true")
    assert none.exit_code == 6, none.stderr
    assert "--network none has only lo" in none.stderr
    assert case.runs() == []
    assert not case.containers()

"""A real coding agent end to end: aider, installed from PyPI in images/agent-aider, run by launcher.

The model is a stand-in (tests/model_standin.py): an OpenAI-compatible chat-completions endpoint
that answers with a scripted edit in aider's "whole" edit format, then a scripted commit message.
It runs in a container on a network of this test's own, standing in for the internet, as
``models.test`` over HTTPS with a certificate from a throwaway CA that only launcher's egress proxy
trusts ([network] ca_file), behind LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS (the network is private
address space, which the proxy otherwise refuses). The run reaches it only through the proxy:
``--api-key OPENAI_API_KEY=https://models.test/v1`` gives aider a placeholder key and
OPENAI_BASE_URL pointing at the proxy, which adds the real key on the way out.

Everything else is real: the aider image built by ``launcher image build agent-aider``, aider
0.86 itself editing, committing with git in the run's container, the harvest of its commit onto
the run's branch. The test repository carries aider's own configuration (.aider.conf.yml: the
stand-in model and the edit format; .aider.model.metadata.json: its context window, so aider
looks nothing up on the internet).
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import clean_env, containers_of, docker_client, make_repo, repo_git, wait_for
from runkit import Case

pytestmark = [pytest.mark.docker, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parents[1]
TEST_KEY = "sk-launcher-aider-" + "3d9f1c7a5e20b846"
MODEL_HOST = "models.test"
COMMIT_MESSAGE = "feat: greet() says hello (scripted by the stand-in)"
NEW_GREET = 'def greet():\n    return "hello from aider"\n'
SCRIPT = {
    # aider's "whole" format: the file's path on a line of its own, then all of its new content.
    "edit": f"greet.py\n```python\n{NEW_GREET}```\n",
    "commit": COMMIT_MESSAGE,
}
AIDER_CONF = "model: openai/standin\nedit-format: whole\nauto-commits: true\n"
MODEL_METADATA = {
    "openai/standin": {
        "max_input_tokens": 32000,
        "max_output_tokens": 4000,
        "input_cost_per_token": 0,
        "output_cost_per_token": 0,
        "litellm_provider": "openai",
        "mode": "chat",
    }
}
PROMPT = "Make greet() say hello from aider."
BUILD_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 300


def local_ca_certs() -> str:
    """This machine's own CAs (Debian keeps added ones here): a build behind an HTTPS-intercepting
    proxy needs them for pip, as in tests/stack/test_compose.py."""
    folder = Path("/usr/local/share/ca-certificates")
    return "".join(p.read_text() for p in sorted(folder.glob("*.crt"))) if folder.is_dir() else ""


@pytest.fixture(scope="module")
def aider_image(agent_image: str) -> str:
    """`launcher image build agent-aider` (a no-op when its content hash is unchanged)."""
    proc = subprocess.run(
        [sys.executable, "-m", "launcher", "image", "build", "agent-aider", "--json"],
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
        env=clean_env({"LAUNCHER_EXTRA_CA_CERTS": local_ca_certs()}),
        check=False,
    )
    assert proc.returncode == 0, f"`launcher image build agent-aider` failed:\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return str(json.loads(proc.stdout)["tag"])


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


@dataclass
class ModelServer:
    network: str
    subnet: str
    ca_file: Path
    record: Path

    def requests(self) -> list[dict[str, Any]]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def model_server(agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelServer]:
    token = secrets.token_hex(4)
    labels = {"launcher.test": "aider-e2e", "launcher.test-token": token}
    top = Path(tmp_path_factory.mktemp("models"))
    top.chmod(0o755)
    certs, record = top / "certs", top / "record"
    certs.mkdir()
    record.mkdir()
    record.chmod(0o777)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=launcher aider test CA",
             "-keyout", "ca.key", "-out", "ca.pem", cwd=certs)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={MODEL_HOST}", "-keyout", "server.key",
             "-out", "server.csr", cwd=certs)  # fmt: skip
    (certs / "ext.cnf").write_text(f"subjectAltName=DNS:{MODEL_HOST}\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "server.pem", cwd=certs)  # fmt: skip
    for name in ("ca.pem", "server.pem", "server.key"):
        (certs / name).chmod(0o644)
    (top / "script.json").write_text(json.dumps(SCRIPT))
    client = docker_client()
    network = client.networks.create(f"launcher-test-models-{token}", driver="bridge", labels=labels)
    container = None
    try:
        from docker.types import Mount

        container = client.containers.create(
            agent_image,
            command=[
                "python3",
                "/srv/model_standin.py",
                "443",
                "/record/models.jsonl",
                "/top/script.json",
                "--tls",
                "/top/certs/server.pem",
                "/top/certs/server.key",
            ],
            name=f"launcher-test-models-{token}",
            labels=labels,
            user="1000:1000",
            mounts=[
                Mount("/srv", str(TESTS_DIR), type="bind", read_only=True),
                Mount("/top", str(top), type="bind", read_only=True),
                Mount("/record", str(record), type="bind"),
            ],
            sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
            network=network.name,
            detach=True,
        )
        # The name the proxy resolves through the engine's DNS on this network.
        network.disconnect(container)
        network.connect(container, aliases=[MODEL_HOST])
        container.start()
        wait_for(lambda: b"listening" in container.logs(), timeout=60, what="the model stand-in to listen")
        network.reload()
        yield ModelServer(
            network=network.name,
            subnet=network.attrs["IPAM"]["Config"][0]["Subnet"],
            ca_file=certs / "ca.pem",
            record=record / "models.jsonl",
        )
    finally:
        if container is not None:
            container.remove(force=True)
        network.reload()
        for member in network.attrs.get("Containers") or {}:
            network.disconnect(member, force=True)  # a proxy a failed test left connected
        network.remove()
        client.close()


@dataclass
class AiderCase:
    case: Case
    models: ModelServer
    repo: Path
    image: str

    def env(self) -> dict[str, str]:
        return {"LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS": self.models.subnet, "OPENAI_API_KEY": TEST_KEY}


@pytest.fixture
def aider_case(case: Case, model_server: ModelServer, aider_image: str, tmp_path: Path) -> AiderCase:
    (case.root / "launcher.toml").write_text(
        f'[network]\negress_network = "{model_server.network}"\nca_file = "{model_server.ca_file}"\n'
    )
    repo = make_repo(
        tmp_path / "repo",
        {
            "greet.py": 'def greet():\n    return "hello"\n',
            ".aider.conf.yml": AIDER_CONF,
            ".aider.model.metadata.json": json.dumps(MODEL_METADATA, indent=2) + "\n",
        },
    )
    model_server.record.unlink(missing_ok=True)
    return AiderCase(case=case, models=model_server, repo=repo, image=aider_image)


def agent_container(case: Case) -> dict[str, Any] | None:
    """The engine's view of the run's agent container once it runs (not a short-lived helper)."""
    from docker.errors import NotFound

    client = docker_client()
    try:
        for container in containers_of(case.root):
            try:
                attrs: dict[str, Any] = client.api.inspect_container(container.id)
            except NotFound:
                continue
            if attrs["State"]["Running"] and "aider-wrapper" in json.dumps(attrs["Config"]["Cmd"]):
                return attrs
        return None
    finally:
        client.close()


def run_log(case: Case, run_id: str, *extra: str) -> str:
    return str(case.ok("logs", run_id, *extra).stdout)


def check_aider_committed(ac: AiderCase, record: dict[str, Any]) -> str:
    """aider's edit is on the run's branch as aider's own commit, on top of the base; the log."""
    branch, base = record["branch"], record["details"]["base_sha"]
    tip = repo_git(ac.repo, "rev-parse", f"refs/heads/{branch}").strip()
    assert repo_git(ac.repo, "rev-parse", f"{tip}^").strip() == base, "aider's commit is not on the base"
    # Only aider asks the model for a commit message: the stand-in's scripted one is the proof
    # that aider (not launcher's capture of uncommitted work) made this commit.
    subject, author, body = repo_git(ac.repo, "log", "-1", "--format=%s%x00%an%x00%b", tip).split("\0")
    assert subject == COMMIT_MESSAGE, (subject, author, body)
    assert author.endswith("(aider)") or "co-authored-by: aider" in body.lower(), (author, body)
    assert repo_git(ac.repo, "show", f"{tip}:greet.py") == NEW_GREET
    changed = repo_git(ac.repo, "diff", "--name-only", base, tip).split()
    assert changed == ["greet.py"], f"aider's commit holds more than its edit: {changed}"
    log = run_log(ac.case, record["id"])
    assert "Applied edit to greet.py" in log, log[-3000:]
    return log


def check_the_model_saw_the_key_and_nothing_else_went_out(ac: AiderCase, run_id: str) -> None:
    chats = [r for r in ac.models.requests() if r["kind"] == "chat"]
    replies = [r["reply"] for r in chats]
    # The edit, asked again when aider first had to add the file the reply names to its chat
    # (the profile's run starts with none), then the commit message.
    assert replies in (["edit", "commit"], ["edit", "edit", "commit"]), chats
    for request in chats:
        headers = {k.lower(): v for k, v in request["headers"]}
        assert headers.get("authorization") == f"Bearer {TEST_KEY}", "the proxy did not add the real key"
        assert request["request_line"].startswith("POST /v1/chat/completions "), request["request_line"]
        assert request["model"] == "standin"
    assert PROMPT in chats[0]["last_user"]
    # aider asked the internet for nothing but the model: no analytics, update or price lookups.
    decisions = [json.loads(line) for line in run_log(ac.case, run_id, "--egress").splitlines()]
    assert decisions, "the proxy logged no decision"
    assert all(d["decision"] == "allow" for d in decisions), [d for d in decisions if d["decision"] != "allow"]
    assert {d["host"] for d in decisions} == {MODEL_HOST}, decisions


def test_aider_edits_and_commits_through_the_proxy_and_never_sees_the_key(aider_case: AiderCase) -> None:
    ac = aider_case
    # The wrapper shows its whole environment in the log (its own /proc entry: the shell that
    # execs aider with exactly that environment), then waits until the test has inspected the
    # container (a marker in the run's .case/, which the harvest leaves out).
    wrapper = (
        "cat /proc/$$/environ | tr '\\0' '\\n' | sed 's/^/AGENT-ENV /'; "
        "i=0; while [ ! -e .case/inspected ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done; "
        'exec "$@"'
    )
    command = [
        "sh", "-c", wrapper, "aider-wrapper",
        "aider", "--model", "openai/standin", "--edit-format", "whole", "--no-stream", "--yes-always",
        "--message", PROMPT, "greet.py",
    ]  # fmt: skip
    proc = ac.case.popen(
        "run", "--json", "--repo", str(ac.repo), "--title", "aider greets", "--image", ac.image,
        "--api-key", f"OPENAI_API_KEY=https://{MODEL_HOST}/v1", "--", *command,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ac.env(),
    )  # fmt: skip
    try:
        attrs = wait_for(lambda: agent_container(ac.case), timeout=120, what="the run's agent container")
        inspected = json.dumps(attrs)
        workspace = next(m["Source"] for m in attrs["Mounts"] if m["Destination"] == "/workspace")
        Path(workspace, ".case", "inspected").write_text("")
        out, err = proc.communicate(timeout=RUN_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    stdout, stderr = out.decode(), err.decode()
    assert proc.returncode == 0, f"{stdout}\n{stderr[-4000:]}"
    record = json.loads(stdout)
    assert record["state"] == "exited", record
    assert record["exit_code"] == 0, record

    log = check_aider_committed(ac, record)
    check_the_model_saw_the_key_and_nothing_else_went_out(ac, record["id"])

    # The key is nowhere in the run: not in the engine's view of the container, not in the
    # agent's environment, not in the log or launcher's output (and nothing had to be redacted).
    env = dict(
        line.removeprefix("AGENT-ENV ").split("=", 1) for line in log.splitlines() if line.startswith("AGENT-ENV ")
    )
    assert env.get("OPENAI_API_KEY"), f"the agent got no placeholder key:\n{log[:3000]}"
    assert env["OPENAI_API_KEY"] != TEST_KEY
    assert "/_launcher/keys/OPENAI_API_KEY" in env.get("OPENAI_BASE_URL", ""), env
    assert TEST_KEY not in inspected
    assert all(TEST_KEY not in value for value in env.values())
    assert TEST_KEY not in log
    assert "***" not in log, "something was redacted from the log: a secret reached the agent"
    assert TEST_KEY not in stdout + stderr


def test_the_aider_profile_runs_from_a_prompt(aider_case: AiderCase) -> None:
    ac = aider_case
    result = ac.case.cli(
        "run", "--json", "--repo", str(ac.repo), "--agent", "aider", "--prompt", PROMPT,
        "--api-key", f"OPENAI_API_KEY=https://{MODEL_HOST}/v1",
        env=ac.env(), timeout=RUN_TIMEOUT_S,
    )  # fmt: skip
    assert result.exit_code == 0, f"{result.stdout}\n{result.stderr[-4000:]}"
    record = json.loads(result.stdout)
    assert record["state"] == "exited", record
    assert record["exit_code"] == 0, record
    log = check_aider_committed(ac, record)
    check_the_model_saw_the_key_and_nothing_else_went_out(ac, record["id"])
    assert TEST_KEY not in log
    assert TEST_KEY not in result.stdout + result.stderr

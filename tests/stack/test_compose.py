"""The build-box stack end to end: the repo's compose.yaml, Debian's docker-compose 1.29.

A project name of our own (``launcher-test-<random>``), a fresh case root under a temp dir with a
git repository below it (the workers mount the root at the same path, because the Docker engine
resolves every run's bind mounts on the host), ``docker-compose build``, ``up -d --scale
worker=2``, tasks queued through one-off worker containers, and the workers' batches run them.

Cleanup, whatever happened: ``docker-compose down -v`` for our project name, then every container
labelled ``launcher.root=<our root>`` or belonging to our project is removed. Nothing else is touched.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import NO_DOCKER, docker_client, docker_reachable, ensure_agent_image, wait_for
from helpers import clean_env as _clean_env
from helpers import repo_git as git

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "compose.yaml"
NO_COMPOSE = "this machine lacks docker-compose (Debian package docker-compose)"
BUILD_TIMEOUT_S = 1200
RUNS_DEADLINE_S = 180
N_TASKS = 3


@dataclass
class Stack:
    project: str
    root: Path
    repo: Path

    def env(self) -> dict[str, str]:
        return clean_env(
            {
                "LAUNCHER_ROOT": str(self.root),
                "COMPOSE_PROJECT_NAME": self.project,
                "LAUNCHER_EXTRA_CA_CERTS": local_ca_certs(),
            }
        )

    def compose(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker-compose", "--ansi", "never", "-f", str(COMPOSE_FILE), "-p", self.project, *args],
            cwd=REPO_ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str, timeout: float = 300) -> str:
        proc = self.compose(*args, timeout=timeout)
        if proc.returncode != 0:
            said = (proc.stdout + "\n" + proc.stderr).splitlines()
            errors = list(dict.fromkeys(line.strip() for line in said if "error" in line.lower()))[:12]
            pytest.fail(
                f"docker-compose {' '.join(args)} -> {proc.returncode}\n"
                + "--- error lines:\n" + "\n".join(errors) + "\n"
                + "--- stdout (tail):\n" + "\n".join(proc.stdout.splitlines()[-30:]) + "\n"
                + "--- stderr (tail):\n" + "\n".join(proc.stderr.splitlines()[-30:])
            )  # fmt: skip
        return proc.stdout

    def worker_logs(self) -> str:
        proc = self.compose("logs", "--no-color", "--tail", "40", "worker", timeout=120)
        return proc.stdout[-6000:]

    def launcher(self, *args: str, timeout: float = 180) -> Any:
        """``launcher ARGS`` in a one-off worker container (the stack's own coordinator); stdout as JSON."""
        out = self.ok("run", "--rm", "-T", "worker", *args, timeout=timeout)
        return json.loads(out)

    def remove_everything(self) -> list[str]:
        """``down -v``, then whatever is still labelled with our root or our project; returns problems."""
        problems = []
        try:
            down = self.compose("down", "-v", "--remove-orphans", "--timeout", "5", timeout=300)
            if down.returncode != 0:
                problems.append(f"docker-compose down -> {down.returncode}: {down.stderr[-2000:]}")
        except subprocess.TimeoutExpired:
            problems.append("docker-compose down timed out")
        client = docker_client()
        try:
            for label in (f"launcher.root={self.root}", f"com.docker.compose.project={self.project}"):
                for container in client.containers.list(all=True, filters={"label": label}):
                    if container.labels.get("launcher.kind") != "egress-proxy":  # lives until gc
                        problems.append(f"left behind: container {container.name} ({label})")
                    container.remove(force=True)
            for network in client.networks.list(filters={"label": f"launcher.root={self.root}"}):
                problems.append(f"left behind: network {network.name} (launcher.root={self.root})")
                network.reload()
                for member in network.attrs.get("Containers") or {}:
                    network.disconnect(member, force=True)
                network.remove()
            for network in client.networks.list(filters={"label": f"com.docker.compose.project={self.project}"}):
                network.remove()
            for volume in client.volumes.list(filters={"label": f"com.docker.compose.project={self.project}"}):
                volume.remove(force=True)
        finally:
            client.close()
        return problems


def workers_health(container_ids: list[str]) -> list[str]:
    """Each container's healthcheck status (starting, healthy, unhealthy), as `docker inspect` says."""
    client = docker_client()
    try:
        found = []
        for container_id in container_ids:
            health = client.containers.get(container_id).attrs["State"].get("Health") or {}
            found.append(str(health.get("Status", "none")))
        return found
    finally:
        client.close()


def clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Also without COMPOSE_*: the test picks its own project name."""
    return _clean_env(extra, drop=("COMPOSE_",))


def local_ca_certs() -> str:
    """This machine's own CAs (Debian keeps locally added ones here): a build box behind an
    HTTPS-intercepting proxy hands them to the launcher image build, and so does this test."""
    folder = Path("/usr/local/share/ca-certificates")
    return "".join(p.read_text() for p in sorted(folder.glob("*.crt"))) if folder.is_dir() else ""


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    if shutil.which("docker-compose") is None:
        pytest.skip(NO_COMPOSE)
    if not docker_reachable():
        pytest.skip(NO_DOCKER)
    # The workers start runs of the default agent image on the host's engine: it must be there.
    ensure_agent_image()

    root = (tmp_path / "case").resolve()
    repo = root / "repos" / "api"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "README.md").write_text("# stack demo\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "initial commit")

    stack = Stack(project=f"launcher-test-{secrets.token_hex(4)}", root=root, repo=repo)
    try:
        yield stack
    finally:
        problems = stack.remove_everything()
        leftover_runs = [p for p in problems if "launcher.root=" in p]
        assert not leftover_runs, f"the stack left run containers behind: {leftover_runs}"
        assert not [p for p in problems if not p.startswith("left behind")], problems


def test_compose_stack_works_through_a_queue(stack: Stack) -> None:
    # Build both images from the repository (a couple of minutes the first time, cached after).
    # --force-rm: a failed build step leaves no intermediate container behind either.
    stack.ok("build", "--force-rm", timeout=BUILD_TIMEOUT_S)
    client = docker_client()
    try:
        for image in ("launcher/launcher:latest", "launcher/postgres:15"):
            assert client.images.get(image).id
    finally:
        client.close()

    stack.ok("up", "-d", "--scale", "worker=2", timeout=300)
    workers = stack.ok("ps", "-q", "worker").split()
    assert len(workers) == 2
    # The compose healthcheck (the worker's own metrics endpoint, asked from inside it) says healthy.
    wait_for(
        lambda: workers_health(workers) == ["healthy", "healthy"],
        timeout=120,
        interval=1,
        what="both workers to be healthy (compose healthcheck: their metrics endpoint)",
    )

    tasks = []
    for i in range(N_TASKS):
        agent = (
            f'echo "stack task {i} by $CASE_RUN_ID" > stack-{i}.txt && git add stack-{i}.txt '
            f'&& git commit -q -m "stack task {i}"'
        )
        created = stack.launcher(
            "task", "create", "--repo", str(stack.repo), "--title", f"Stack task {i}", "--queue", "--json",
            "--", "sh", "-c", agent,
        )  # fmt: skip
        assert created["queued"] is True
        assert created["repo_path"] == str(stack.repo)
        tasks.append(created)
    ids = [t["id"] for t in tasks]
    assert len(set(ids)) == N_TASKS

    deadline = time.monotonic() + RUNS_DEADLINE_S
    while True:
        runs = stack.launcher("ps", "--all", "--json")
        states = {r["task_id"]: r["state"] for r in runs}
        bad = [r for r in runs if r["state"] in ("failed", "timed-out", "cancelled", "lost")]
        assert not bad, f"runs that did not exit 0: {bad}\n--- worker logs:\n{stack.worker_logs()}"
        if len(runs) == N_TASKS and set(states) == set(ids) and set(states.values()) == {"exited"}:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"after {RUNS_DEADLINE_S}s the workers had not run every task: {states}\n"
                f"--- worker logs:\n{stack.worker_logs()}"
            )
        time.sleep(2)  # between polls of the queue through a one-off container, not as synchronisation

    # Each task ran once, by one of the two workers, and its commit is on its branch in the repository.
    worker_hosts = {container_id[:12] for container_id in workers}
    for i, task_id in enumerate(ids):
        (run,) = [r for r in runs if r["task_id"] == task_id]
        assert run["exit_code"] == 0
        assert run["owner"]["host"] in worker_hosts, (run["owner"], worker_hosts)
        assert git(stack.repo, "show", f"{run['branch']}:stack-{i}.txt") == f"stack task {i} by {run['id']}\n"
        assert git(stack.repo, "rev-parse", f"{run['branch']}~1") == git(stack.repo, "rev-parse", "main")
    branches = git(stack.repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/launcher/").split()
    assert sorted(branches) == sorted(r["branch"] for r in runs)
    assert stack.launcher("matrix", "--format", "json") == {"include": []}

"""`launcher doctor` on this machine: every check passes on a fresh root, and each blocking check
fails with its hint where its cause is made real (an engine socket that does not exist or never
answers, an image that does not exist, a read-only root, a coordinator that refuses, an
allowlisted host that resolves to loopback), without disturbing the shared engine."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import clean_env, containers_of, ensure_agent_image, invoke, networks_of, run_cli
from pg import pg_server, pg_url

from launcher.core.doctor import CHECK_NAMES
from launcher.models import CheckResult

__all__ = ["pg_server", "pg_url"]


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A case root after `launcher init`, with nothing in the environment choosing another."""
    for name in ("CASE_ROOT", "LAUNCHER_STATE_URL", "LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "case"
    path.mkdir()
    result = invoke(["--root", str(path), "init"])
    assert result.exit_code == 0, result.stderr
    return path


def doctor(root: Path, *args: str) -> tuple[int, dict[str, CheckResult]]:
    result = invoke(["--root", str(root), "doctor", "--json", *args])
    found = [CheckResult.model_validate(item) for item in json.loads(result.stdout)]
    assert [r.name for r in found] == list(CHECK_NAMES), result.stdout
    return result.exit_code, {r.name: r for r in found}


def set_config(root: Path, text: str) -> None:
    # Each section once: launcher init's file has every key commented, so a fresh file is simplest.
    (root / "launcher.toml").write_text(text)


@pytest.mark.docker
@pytest.mark.slow
def test_every_check_passes_here_and_nothing_is_left(root: Path) -> None:
    ensure_agent_image()
    if shutil.disk_usage(root).free < 22 * 1024**3:
        # A small disk: a run's 20 GiB budget would reach the reserve (a warning, not this test's point).
        set_config(root, "[run]\ndisk = 1048576\n")
    code, found = doctor(root)
    assert code == 0, found
    assert {name: r.status for name, r in found.items()} == dict.fromkeys(CHECK_NAMES, "ok")
    assert "API 1." in found["engine"].detail
    assert "storage driver" in found["engine"].detail
    assert "present and current: launcher/agent-base:" in found["agent-image"].detail
    assert "present and current: launcher/egress-proxy:" in found["proxy-image"].detail
    assert "as uid 20000)" in found["git-image"].detail
    assert "/tmp and /home/agent writable and executable" in found["home-tmp"].detail
    assert "removed with its throwaway network" in found["egress-proxy"].detail
    assert "schema version" in found["coordinator"].detail
    # The probe container, the trial proxy and its network are gone, and so are their folders.
    assert containers_of(root, include_proxy=True) == []
    assert networks_of(root) == []
    assert not (root / ".launcher" / "doctor").exists()
    # The same as text: one line per check, then the count.
    result = invoke(["--root", str(root), "doctor", "--skip", "egress-proxy"])
    assert result.exit_code == 0, result.stdout
    lines = result.stdout.splitlines()
    assert [line.split()[:2] for line in lines[:-1]] == [
        ["skip" if n == "egress-proxy" else "ok", n] for n in CHECK_NAMES
    ]
    assert lines[-1] == "12 checks: 11 ok, 1 skip; nothing blocks runs"


def test_engine_that_does_not_exist(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{root}/no-docker.sock")
    result = invoke(["--root", str(root), "doctor"])
    assert result.exit_code == 1
    assert "FAIL  engine        cannot reach the Docker engine" in result.stdout
    assert "hint: start Docker (or set DOCKER_HOST)" in result.stdout
    assert "skip  agent-image   not checked: engine failed" in result.stdout
    assert result.stdout.splitlines()[-1].endswith("runs are blocked by: engine")


@pytest.fixture
def silent_engine() -> Iterator[str]:
    """A socket that takes connections and never answers: an engine that hangs."""
    folder = tempfile.mkdtemp(prefix="dr-", dir="/tmp")  # a unix socket's path is short
    path = os.path.join(folder, "docker.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    try:
        yield f"unix://{path}"
    finally:
        listener.close()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_hung_engine_fails_on_the_deadline(root: Path, silent_engine: str) -> None:
    result = run_cli(
        ["--root", str(root), "doctor", "--json", "--timeout", "2"],
        env=clean_env({"DOCKER_HOST": silent_engine}),
        timeout=60,
    )
    assert result.exit_code == 1, result.stderr
    found = {item["name"]: item for item in json.loads(result.stdout)}
    assert found["engine"]["status"] == "fail"
    assert found["engine"]["blocking"]
    assert found["engine"]["detail"] == "no answer within 2 s"
    assert "docker info" in found["engine"]["hint"]
    assert found["git-host"]["status"] == "ok"


@pytest.mark.docker
def test_image_that_does_not_exist(root: Path) -> None:
    set_config(root, '[run]\nimage = "launcher/doctor-test-no-such-image:latest"\n')
    code, found = doctor(root, "--skip", "egress-proxy")
    assert code == 1
    image = found["agent-image"]
    assert image.status == "fail"
    assert image.blocking
    assert image.detail == "launcher/doctor-test-no-such-image:latest ([run] image) is not in the local Docker engine"
    assert image.hint == "pull or build launcher/doctor-test-no-such-image:latest, or name another in [run] image"
    assert found["git-image"].status == found["home-tmp"].status == "skip"
    assert found["engine"].status == "ok"


def test_root_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = invoke(["--root", str(tmp_path / "file" / "case"), "doctor", "--json", "--quick"])
    assert result.exit_code == 1
    found = {item["name"]: item for item in json.loads(result.stdout)}
    assert found["case-root"]["status"] == "fail"
    assert "is not a directory" in found["case-root"]["detail"]
    assert found["case-root"]["hint"]
    assert found["config"]["status"] == "skip"


def _read_only_doctor(root: Path) -> subprocess.CompletedProcess[str] | None:
    """doctor on ``root`` mounted read-only in a mount namespace of its own (nothing else sees
    the mount, and it goes with the process); None where this machine cannot do that."""
    if shutil.which("unshare") is None:
        return None
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" || exit 99; shift; exec "$@"'
    command = [sys.executable, "-m", "launcher", "--root", str(root), "doctor", "--json", "--quick"]
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script, "sh", str(root), *command],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=120,
        check=False,
    )
    return None if proc.returncode == 99 or proc.stderr.startswith("unshare:") else proc


@pytest.mark.slow
def test_read_only_case_root(root: Path) -> None:
    proc = _read_only_doctor(root)
    if proc is None:
        # As root, a mode bit stops nothing; an immutable folder does.
        if subprocess.run(["chattr", "+i", str(root)], capture_output=True, check=False).returncode != 0:
            pytest.skip("this machine allows neither a private read-only mount (unshare -m) nor chattr +i")
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "launcher", "--root", str(root), "doctor", "--json", "--quick"],
                capture_output=True,
                text=True,
                env=clean_env(),
                timeout=120,
                check=False,
            )
        finally:
            subprocess.run(["chattr", "-i", str(root)], check=True)
    assert proc.returncode == 1, proc.stderr
    found = {item["name"]: item for item in json.loads(proc.stdout)}
    case_root = found["case-root"]
    assert case_root["status"] == "fail", case_root
    assert case_root["blocking"]
    assert case_root["detail"].startswith(f"cannot write in {root}")
    assert case_root["hint"] in (
        "the case root is on a read-only file system",
        "check the permissions of the case root and its .launcher folder",
    )


def test_coordinator_that_cannot_connect(root: Path) -> None:
    url = "postgresql://launcher:secret@127.0.0.1:1/nothing"
    result = invoke(["--root", str(root), "--state-url", url, "doctor", "--json", "--quick", "--skip", "engine"])
    assert result.exit_code == 1
    found = {item["name"]: item for item in json.loads(result.stdout)}
    coordinator = found["coordinator"]
    assert coordinator["status"] == "fail"
    assert coordinator["blocking"]
    assert "cannot connect to the PostgreSQL state store" in coordinator["detail"]
    assert "secret" not in result.stdout
    assert "PostgreSQL server is running" in coordinator["hint"]


def test_postgres_coordinator(root: Path, pg_url: str) -> None:
    _code, found = doctor(root, "--quick", "--skip", "engine")
    assert found["coordinator"].status == "ok"
    result = invoke(["--root", str(root), "--state-url", pg_url, "doctor", "--json", "--quick", "--skip", "engine"])
    by_name = {item["name"]: item for item in json.loads(result.stdout)}
    assert by_name["coordinator"]["status"] == "ok"
    assert "no launcher tables yet" in by_name["coordinator"]["detail"]
    assert result.exit_code == 0, result.stdout
    assert invoke(["--root", str(root), "--state-url", pg_url, "task", "list"]).exit_code == 0  # makes the schema
    result = invoke(["--root", str(root), "--state-url", pg_url, "doctor", "--json", "--quick", "--skip", "engine"])
    by_name = {item["name"]: item for item in json.loads(result.stdout)}
    assert "schema version" in by_name["coordinator"]["detail"]
    assert result.exit_code == 0


def test_allowlisted_host_on_loopback(root: Path) -> None:
    set_config(root, '[network]\nallow = ["localhost"]\n')
    code, found = doctor(root, "--quick", "--skip", "engine")
    assert code == 1
    allowlist = found["allowlist"]
    assert allowlist.status == "fail"
    assert allowlist.blocking
    assert allowlist.detail.startswith("the proxy would refuse localhost: localhost resolves to 127.0.0.1")
    assert allowlist.hint
    assert "[network] allow" in allowlist.hint


def test_usage_errors_exit_2(root: Path) -> None:
    result = invoke(["--root", str(root), "doctor", "--skip", "nothing"])
    assert result.exit_code == 2
    assert "no check nothing" in result.stderr
    assert "engine" in invoke(["doctor", "--help"]).stdout

"""The proxy's program as it ships: standard library only, installed file by file, started isolated."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any

from egress_kit import proxy_command

import launcher.egress
from launcher.adapters.docker import egress_proxy_files, egress_proxy_sha256, install_egress_proxy
from launcher.adapters.docker.egress import (
    CONTAINER_PROGRAM,
    CONTAINER_PROGRAM_PARENT,
    PROXY_BOOT,
    DockerEgress,
    ProxySettings,
)

PACKAGE = Path(launcher.egress.__file__).parent


def test_the_program_imports_only_the_standard_library_and_itself() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert {"__init__.py", "__main__.py", "server.py", "hostnames.py"} <= {path.name for path in files}
    for path in files:
        tree = ast.parse(path.read_text())
        modules = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        absolute = [node for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.level == 0]
        modules |= {node.module for node in absolute if node.module}
        assert {name.split(".")[0] for name in modules} - {"__future__"} <= sys.stdlib_module_names, path.name


def test_the_installed_program_runs_in_an_isolated_interpreter_without_site_packages(tmp_path: Path) -> None:
    done = subprocess.run(
        [*proxy_command(tmp_path), "--help"], env={}, cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert "--policies" in done.stdout


def test_nothing_from_the_working_directory_or_the_environment_is_imported(tmp_path: Path) -> None:
    # A planted "egress" package and a PYTHONPATH that names it: the mounted one must win.
    planted = tmp_path / "cwd" / "egress"
    planted.mkdir(parents=True)
    (planted / "__init__.py").write_text("raise SystemExit('planted package imported')\n")
    (planted / "__main__.py").write_text("raise SystemExit('planted package imported')\n")
    (tmp_path / "cwd" / "argparse.py").write_text("raise SystemExit('planted module imported')\n")
    done = subprocess.run(
        [*proxy_command(tmp_path / "state"), "--help"],
        env={"PYTHONPATH": str(tmp_path / "cwd"), "PYTHONSTARTUP": str(planted / "__init__.py")},
        cwd=tmp_path / "cwd",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert "--policies" in done.stdout


def test_the_package_is_installed_file_by_file_and_only_what_changed(tmp_path: Path) -> None:
    files = egress_proxy_files()
    assert set(files) == {path.name for path in PACKAGE.glob("*.py")}
    folder = install_egress_proxy(tmp_path)
    assert folder == tmp_path / "bin" / "egress"
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == files
    before = {path.name: path.stat().st_ino for path in folder.iterdir()}
    digest = egress_proxy_sha256(folder)

    (folder / "server.py").write_bytes(b"# changed\n")
    (folder / "gone.py").write_bytes(b"# a module the package no longer has\n")
    (folder / ".server.py.x1y2.tmp").write_bytes(b"another launcher's write in flight")
    (tmp_path / "bin" / "egress_proxy.py").write_bytes(b"# the single file of old\n")
    assert egress_proxy_sha256(folder) != digest
    assert install_egress_proxy(tmp_path) == folder

    after = {path.name: path.stat().st_ino for path in folder.iterdir() if path.suffix == ".py"}
    assert set(after) == set(files)
    assert (folder / "server.py").read_bytes() == files["server.py"]
    assert {name: ino for name, ino in after.items() if name != "server.py"} == {
        name: ino for name, ino in before.items() if name != "server.py"
    }, "an unchanged file was rewritten"
    assert (folder / ".server.py.x1y2.tmp").exists()
    assert not (tmp_path / "bin" / "egress_proxy.py").exists()
    assert egress_proxy_sha256(folder) == digest


def test_the_fingerprint_covers_every_file_and_its_name(tmp_path: Path) -> None:
    folder = install_egress_proxy(tmp_path)
    digests = {egress_proxy_sha256(folder)}
    (folder / "extra.py").write_bytes(b"")
    digests.add(egress_proxy_sha256(folder))
    (folder / "extra.py").rename(folder / "other.py")
    digests.add(egress_proxy_sha256(folder))
    (folder / "other.py").write_bytes(b"x")
    digests.add(egress_proxy_sha256(folder))
    assert len(digests) == 4


class FakeContainer:
    status = "running"

    def start(self) -> None:
        pass

    def logs(self, **_: Any) -> bytes:
        return b"egress proxy listening on 0.0.0.0:3128\n"

    def reload(self) -> None:
        pass


class FakeContainers:
    def __init__(self) -> None:
        self.created: list[dict[str, Any]] = []

    def create(self, **kwargs: Any) -> FakeContainer:
        self.created.append(kwargs)
        return FakeContainer()


class FakeDocker:
    def __init__(self) -> None:
        self.containers = FakeContainers()


def test_the_proxy_container_mounts_the_package_read_only_and_keeps_its_profile(tmp_path: Path) -> None:
    folder = install_egress_proxy(tmp_path / "state")
    settings = ProxySettings(
        root=str(tmp_path),
        name="launcher-egress-test",
        image="launcher/egress-proxy:latest",
        egress_network="launcher-egress",
        uid=1234,
        gid=1235,
        program_dir=str(folder),
        program_sha256=egress_proxy_sha256(folder),
        policies_dir=str(tmp_path / "policies"),
        logs_dir=str(tmp_path / "logs"),
    )
    docker = FakeDocker()
    DockerEgress(settings, tmp_path / "lock", lambda: docker)._create_proxy()
    (created,) = docker.containers.created
    assert created["command"][:5] == ["python3", "-I", "-c", PROXY_BOOT, CONTAINER_PROGRAM_PARENT]
    assert created["command"][5:] == [
        *("--listen", "0.0.0.0:3128", "--policies", "/egress/policies", "--logs", "/egress/logs"),
    ]
    # The boot line imports "egress" from the folder it is given: the mount must be that package.
    assert (Path(CONTAINER_PROGRAM).parent, Path(CONTAINER_PROGRAM).name) == (Path(CONTAINER_PROGRAM_PARENT), "egress")
    mounts = {mount["Target"]: dict(mount) for mount in created["mounts"]}
    assert mounts[CONTAINER_PROGRAM] == {
        "Target": CONTAINER_PROGRAM,
        "Source": str(folder),
        "Type": "bind",
        "ReadOnly": True,
    }
    assert mounts["/egress/policies"]["ReadOnly"] is True
    profile = {key: created[key] for key in created if key not in ("command", "mounts", "labels")}
    assert profile == {
        "image": "launcher/egress-proxy:latest",
        "name": "launcher-egress-test",
        "user": "1234:1235",
        "network": "launcher-egress",
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "read_only": True,
        "pids_limit": 256,
        "mem_limit": "256m",
        "init": True,
        "restart_policy": {"Name": "on-failure", "MaximumRetryCount": 5},
        "detach": True,
    }
    assert created["labels"]["launcher.proxy-config"] == settings.fingerprint

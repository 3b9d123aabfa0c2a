"""`launcher doctor`'s rules with a fake machine: status, blocking, skips, deadlines, exit code."""

from __future__ import annotations

import errno
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from launcher.core.doctor import CHECK_NAMES, Doctor, DoctorSetup, exit_code
from launcher.core.doctor.ports import EngineFacts, ImageFacts, StoreFacts
from launcher.core.doctor.probe import DONE, parse_output
from launcher.errors import DockerUnavailableError, InvalidInputError, StateStoreError
from launcher.models import CheckResult, SandboxSpec
from launcher.settings import LauncherConfig

GOOD_PROBE = f"git ok git version 2.39.5\ndir /tmp ok exec\ndir /home/agent ok exec\n{DONE}\n"
GiB = 1024**3


class FakeSandbox:
    def __init__(self, host: FakeHost) -> None:
        self.host = host

    def create(self, spec: SandboxSpec) -> str:
        self.host.specs.append(spec)
        return "c1"

    def start(self, container_id: str) -> None:
        pass

    def wait(self, container_id: str, timeout: float | None) -> int | None:
        return 0

    def logs(self, container_id: str) -> Iterator[bytes]:
        return iter([self.host.probe_output.encode()])

    def remove(self, container_id: str) -> None:
        self.host.removed.append(container_id)


class FakeHost:
    """A machine where everything works until a test says otherwise."""

    def __init__(self) -> None:
        self.engine_error: Exception | None = None
        self.engine_hangs = threading.Event()
        self.engine_facts = EngineFacts(
            version="20.10.24",
            api_version="1.41",
            client_api_version="1.41",
            storage_driver="overlay2",
            runtimes=["runc"],
        )
        self.images: dict[str, ImageFacts] = {}
        self.probe_output = GOOD_PROBE
        self.specs: list[SandboxSpec] = []
        self.removed: list[str] = []
        self.proxy_error: Exception | None = None
        self.git = "git version 2.47.3"
        self.dns: dict[str, list[str]] = {}
        self.public: list[str] = []
        self.free, self.size = 100 * GiB, 200 * GiB
        self.write_error: OSError | None = None
        self.store_facts = StoreFacts(where="/r/.launcher/state.db", exists=True, schema_version=6, known_version=6)
        self.store_error: Exception | None = None
        self.opened: list[str] = []

    def engine(self) -> EngineFacts:
        if self.engine_hangs.is_set():
            threading.Event().wait(30)
        if self.engine_error:
            raise self.engine_error
        return self.engine_facts

    def image(self, ref: str) -> ImageFacts:
        return self.images.get(ref) or ImageFacts(
            ref=ref, image_id="sha256:aaa", context_name="x", current_tag=f"{ref}-hash", current_id="sha256:aaa"
        )

    def sandbox(self) -> Any:
        return FakeSandbox(self)

    def try_proxy(self, root: Path, state_dir: Path, network: Any, run: Any) -> str:
        if self.proxy_error:
            raise self.proxy_error
        return "listened"

    def git_version(self) -> str:
        return self.git

    def resolve(self, host: str) -> list[str]:
        if host not in self.dns:
            raise OSError(errno.ENOENT, "Name or service not known")
        return self.dns[host]

    def host_addresses(self, private_allowed: list[str]) -> list[str]:
        return ["198.51.100.7"]

    def public_cidrs(self) -> list[str]:
        return self.public

    def free_space(self, path: Path) -> int:
        return self.free

    def disk_size(self, path: Path) -> int:
        return self.size

    def probe_write(self, folder: Path) -> None:
        if self.write_error:
            raise self.write_error

    def store(self, url: str) -> StoreFacts:
        if self.store_error:
            raise self.store_error
        return self.store_facts

    def open_store(self, url: str) -> None:
        self.opened.append(url)


def config_of(**sections: dict[str, Any]) -> LauncherConfig:
    return LauncherConfig.model_validate(sections)


def diagnose(
    host: FakeHost, tmp_path: Path, config: LauncherConfig | None = None, **options: Any
) -> dict[str, CheckResult]:
    (tmp_path / ".launcher").mkdir(exist_ok=True)
    setup = DoctorSetup(root=tmp_path, config=config or LauncherConfig(), state_url="sqlite:///x")
    results = Doctor(setup, host, timeout=options.pop("timeout", 5.0), **options).run()
    assert [r.name for r in results] == list(CHECK_NAMES)
    return {r.name: r for r in results}


def test_all_good_is_all_ok_and_exit_0(tmp_path: Path) -> None:
    host = FakeHost()
    found = diagnose(host, tmp_path)
    assert {r.status for r in found.values()} == {"ok"}, found
    assert exit_code(list(found.values())) == 0
    assert "2.39.5" in found["git-image"].detail
    assert "host git 2.47.3" in found["git-image"].detail
    # One probe container for git-image and home-tmp, on a run's uid, without a network, removed.
    (spec,) = host.specs
    assert spec.network == "none"
    assert spec.user.split(":")[0] != "0"
    assert spec.writable_tmp == ["/tmp", "/home/agent"]
    assert spec.labels["launcher.root"] == str(tmp_path)
    assert host.removed == ["c1"]
    assert host.opened == ["sqlite:///x"]


def test_engine_down_fails_once_and_skips_what_needs_it(tmp_path: Path) -> None:
    host = FakeHost()
    host.engine_error = DockerUnavailableError("cannot reach the Docker engine: gone", hint="start Docker")
    found = diagnose(host, tmp_path)
    assert found["engine"].status == "fail"
    assert found["engine"].blocking
    assert found["engine"].hint == "start Docker"
    for name in ("agent-image", "proxy-image", "git-image", "home-tmp", "egress-proxy"):
        assert found[name].detail == "not checked: engine failed", found[name]
        assert found[name].status == "skip"
        assert not found[name].blocking
    assert found["allowlist"].status == "ok"
    assert exit_code(list(found.values())) == 1


def test_a_hung_check_fails_on_its_deadline(tmp_path: Path) -> None:
    host = FakeHost()
    host.engine_hangs.set()
    started = time.monotonic()
    found = diagnose(host, tmp_path, timeout=0.3)
    assert time.monotonic() - started < 5
    engine = found["engine"]
    assert engine.status == "fail"
    assert engine.blocking
    assert "no answer within 0.3 s" in engine.detail
    assert engine.hint
    assert "docker info" in engine.hint


def test_a_check_that_crashes_is_a_failure_not_a_traceback(tmp_path: Path) -> None:
    host = FakeHost()
    host.engine_error = KeyError("Version")
    found = diagnose(host, tmp_path)
    assert found["engine"].status == "fail"
    assert "the check itself failed: KeyError" in found["engine"].detail


def test_missing_image_names_the_build_command(tmp_path: Path) -> None:
    host = FakeHost()
    ref = "launcher/agent-base:latest"
    host.images[ref] = ImageFacts(
        ref=ref, image_id=None, context_name="agent-base", current_tag="launcher/agent-base:1"
    )
    found = diagnose(host, tmp_path)
    assert found["agent-image"].status == "fail"
    assert found["agent-image"].blocking
    assert found["agent-image"].hint == "build it with `launcher image build agent-base`"
    assert found["git-image"].detail == "not checked: agent-image failed"
    assert found["home-tmp"].status == "skip"
    assert not host.specs


def test_image_not_current_is_a_warning(tmp_path: Path) -> None:
    host = FakeHost()
    ref = "launcher/agent-base:latest"
    host.images[ref] = ImageFacts(
        ref=ref, image_id="sha256:old", context_name="agent-base", current_tag="launcher/agent-base:new"
    )
    found = diagnose(host, tmp_path)
    assert found["agent-image"].status == "warn"
    assert "not the current build" in found["agent-image"].detail
    assert found["agent-image"].hint == "rebuild it: `launcher image build agent-base`"
    host.images[ref] = ImageFacts(
        ref=ref, image_id="sha256:old", context_name="agent-base", current_tag="t:new", current_id="sha256:new"
    )
    found = diagnose(host, tmp_path)
    assert found["agent-image"].status == "warn"
    assert "not the current build t:new" in found["agent-image"].detail
    assert exit_code(list(found.values())) == 0
    # The image a run uses comes from [agent] default's profile when it names one.
    found = diagnose(host, tmp_path, config_of(agent={"default": "claude"}))
    assert "launcher/agent-claude:latest ([agent] default 'claude')" in found["agent-image"].detail


def test_proxy_failures_block_only_when_runs_get_a_network(tmp_path: Path) -> None:
    from launcher.errors import DockerError

    host = FakeHost()
    host.proxy_error = DockerError("cannot start the egress proxy: boom")
    found = diagnose(host, tmp_path)
    assert found["egress-proxy"].status == "fail"
    assert found["egress-proxy"].blocking
    found = diagnose(host, tmp_path, config_of(network={"mode": "none"}))
    assert found["egress-proxy"].status == "fail"
    assert not found["egress-proxy"].blocking
    assert exit_code(list(found.values())) == 0


def test_disk_against_reserve_and_budget(tmp_path: Path) -> None:
    host = FakeHost()
    host.free = GiB // 2
    found = diagnose(host, tmp_path)
    assert found["disk"].status == "fail"
    assert found["disk"].blocking
    assert "lower [run] disk_reserve" in str(found["disk"].hint)
    host.free = 5 * GiB
    assert diagnose(host, tmp_path)["disk"].status == "warn"  # 1 GiB reserve + a 20 GiB budget
    assert diagnose(host, tmp_path, config_of(run={"disk": 2 * GiB}))["disk"].status == "ok"
    # The default reserve is at most a twentieth of a small disk; a reserve that is set is taken as set.
    host.free, host.size = 200 * 1024**2, 2 * GiB
    small = config_of(run={"disk": 10 * 1024**2})
    assert diagnose(host, tmp_path, small)["disk"].status == "ok"
    assert diagnose(host, tmp_path, config_of(run={"disk": 10 * 1024**2, "disk_reserve": GiB}))["disk"].status == "fail"


@pytest.mark.parametrize(("version", "status"), [("2.28.0", "fail"), ("2.39.5", "warn"), ("2.40.0", "ok")])
def test_host_git_versions(tmp_path: Path, version: str, status: str) -> None:
    host = FakeHost()
    host.git = f"git version {version}"
    assert diagnose(host, tmp_path)["git-host"].status == status


def test_allowlist_refused_unresolved_public(tmp_path: Path) -> None:
    host = FakeHost()
    host.dns = {"localhost": ["127.0.0.1", "::1"], "pypi.org": ["151.101.0.223"], "mirror.corp": ["10.20.1.5"]}
    found = diagnose(host, tmp_path, config_of(network={"allow": ["localhost", "nowhere.invalid"]}))
    check = found["allowlist"]
    assert check.status == "fail"
    assert check.blocking
    assert "localhost resolves to 127.0.0.1, which is not a public address" in check.detail
    assert "nowhere.invalid does not resolve" in check.detail
    assert "allow_private" in str(check.hint)
    found = diagnose(host, tmp_path, config_of(network={"presets": ["pypi"], "allow": ["nowhere.invalid"]}))
    assert found["allowlist"].status == "warn"
    assert not found["allowlist"].blocking
    host.dns["files.pythonhosted.org"] = ["151.101.64.223"]
    found = diagnose(
        host, tmp_path, config_of(network={"presets": ["pypi"], "allow": ["*.example.com", "pypi.org:22"]})
    )
    assert found["allowlist"].status == "ok", found["allowlist"]
    assert "2 host(s)" in found["allowlist"].detail
    assert "*.example.com resolved as runs ask" in found["allowlist"].detail
    # A private mirror passes once its range is allowed; the host's own address never does.
    private = config_of(network={"allow": ["mirror.corp"], "allow_private": ["10.20.0.0/16"]})
    assert diagnose(host, tmp_path, private)["allowlist"].status == "ok"
    host.dns["me.example"] = ["198.51.100.7"]
    host.public = ["198.51.100.0/24"]
    found = diagnose(host, tmp_path, config_of(network={"allow": ["me.example"]}))
    assert found["allowlist"].status == "fail"
    assert "the launcher host" in found["allowlist"].detail
    assert diagnose(host, tmp_path, config_of(network={"presets": ["nope"]}))["allowlist"].status == "fail"


def test_allowlist_lookups_are_bounded(tmp_path: Path) -> None:
    host = FakeHost()
    release = threading.Event()

    def stuck(name: str) -> list[str]:
        release.wait(10)
        return ["151.101.0.223"]

    host.resolve = stuck  # type: ignore[method-assign]
    try:
        found = diagnose(host, tmp_path, config_of(network={"allow": ["slow.example"]}), timeout=0.5)
    finally:
        release.set()
    assert found["allowlist"].status == "warn"
    assert "no answer within" in found["allowlist"].detail


def test_coordinator_versions(tmp_path: Path) -> None:
    host = FakeHost()
    host.store_facts = StoreFacts(where="db", exists=True, schema_version=7, known_version=6)
    found = diagnose(host, tmp_path)
    assert found["coordinator"].status == "fail"
    assert "upgrade launcher" in str(found["coordinator"].hint)
    host.store_facts = StoreFacts(where="db", exists=True, schema_version=5, known_version=6)
    assert diagnose(host, tmp_path)["coordinator"].status == "warn"
    assert host.opened == []  # an older store is never opened: that would migrate it
    host.store_facts = StoreFacts(where="db", exists=False, schema_version=None, known_version=6)
    assert diagnose(host, tmp_path)["coordinator"].status == "warn"
    host.store_facts = StoreFacts(where="pg", exists=True, schema_version=None, known_version=6)
    assert diagnose(host, tmp_path)["coordinator"].status == "ok"
    host.store_error = StateStoreError("cannot connect to the PostgreSQL state store pg: refused", hint="check the URL")
    found = diagnose(host, tmp_path)
    assert found["coordinator"].status == "fail"
    assert found["coordinator"].hint == "check the URL"


def test_case_root_unwritable_and_missing(tmp_path: Path) -> None:
    host = FakeHost()
    host.write_error = OSError(errno.EROFS, "Read-only file system", str(tmp_path))
    found = diagnose(host, tmp_path)
    assert found["case-root"].status == "fail"
    assert found["case-root"].blocking
    assert found["case-root"].hint == "the case root is on a read-only file system"
    assert found["egress-proxy"].detail == "not checked: case-root failed"
    error = InvalidInputError("case root /x is not a directory")
    results = Doctor(DoctorSetup(root_error=error), FakeHost(), timeout=5).run()
    by_name = {r.name: r for r in results}
    assert by_name["case-root"].status == "fail"
    assert by_name["case-root"].detail == "case root /x is not a directory"
    assert by_name["config"].status == "skip"
    assert by_name["engine"].status == "ok"
    assert exit_code(results) == 1


def test_bad_config_fails_once(tmp_path: Path) -> None:
    error = InvalidInputError("launcher.toml: run.timeout: bad", hint="fix it")
    setup = DoctorSetup(root=tmp_path, config_error=error)
    by_name = {r.name: r for r in Doctor(setup, FakeHost(), timeout=5).run()}
    assert by_name["config"].status == "fail"
    assert by_name["config"].hint == "fix it"
    for name in ("coordinator", "disk", "agent-image", "allowlist", "git-image", "egress-proxy"):
        assert by_name[name].status == "skip", by_name[name]
    found = diagnose(FakeHost(), tmp_path, config_of(agent={"default": "nobody"}))
    assert found["config"].status == "fail"
    assert "no such agent profile" in found["config"].detail


def test_skip_quick_and_unknown_names(tmp_path: Path) -> None:
    host = FakeHost()
    found = diagnose(host, tmp_path, skip=["allowlist"], quick=True)
    assert found["allowlist"].detail == "skipped (--skip)"
    assert {found[n].status for n in ("git-image", "home-tmp", "egress-proxy")} == {"skip"}
    assert not host.specs
    with pytest.raises(InvalidInputError, match="no check nope"):
        Doctor(DoctorSetup(), host, skip=["nope"])


def test_probe_findings(tmp_path: Path) -> None:
    host = FakeHost()
    host.probe_output = f"git missing\ndir /tmp ok exec\ndir /home/agent unwritable sh: cannot create\n{DONE}\n"
    found = diagnose(host, tmp_path)
    assert found["git-image"].status == "fail"
    assert "no git in" in found["git-image"].detail
    assert found["home-tmp"].status == "fail"
    assert "/home/agent: sh: cannot create" in found["home-tmp"].detail
    assert len(host.specs) == 1
    host.probe_output = f"git ok git version 2.39.5\ndir /tmp ok noexec\ndir /home/agent ok exec\n{DONE}\n"
    found = diagnose(host, tmp_path)
    assert found["home-tmp"].status == "warn"
    assert exit_code(list(found.values())) == 0
    host.probe_output = "git broken error while loading shared libraries\n"
    found = diagnose(host, tmp_path)
    assert found["git-image"].status == "fail"
    assert "did not finish" in found["git-image"].detail
    parsed = parse_output("img", "1:1", f"git broken libpcre missing\n{DONE}\n")
    assert parsed.git is None
    assert parsed.git_problem == "libpcre missing"
    assert parsed.finished


def test_warnings_never_fail() -> None:
    results = [
        CheckResult(name="a", status="warn", detail="x", hint="y"),
        CheckResult(name="b", status="fail", detail="x", hint="y", blocking=False),
        CheckResult(name="c", status="skip", detail="x"),
    ]
    assert exit_code(results) == 0
    assert exit_code([*results, CheckResult(name="d", status="fail", detail="x", blocking=True)]) == 1

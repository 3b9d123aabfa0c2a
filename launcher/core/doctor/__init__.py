"""`launcher doctor`: is this machine ready for runs? Each check in a bounded time, in order.

A check that depends on another (the images on the engine, the proxy on its image) is skipped
when that one failed, so one cause gives one failure. A check that does not answer in time (a
hung engine, a resolver that never replies) fails on its own deadline: its thread is left behind,
a daemon, and doctor goes on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from launcher.core.doctor import checks
from launcher.core.doctor.checks import NotChecked, Verdict
from launcher.core.doctor.ports import DoctorHost
from launcher.core.doctor.probe import ProbeOutput, probe_spec, run_probe
from launcher.errors import ExitCode, InvalidInputError, LauncherError
from launcher.models import CheckResult
from launcher.settings import LauncherConfig, Layout

DEFAULT_TIMEOUT_S = 30.0


def _always(_: Doctor) -> bool:
    return True


@dataclass(frozen=True)
class Check:
    name: str
    what: str  # for --help
    run: Callable[[Doctor], Verdict]
    needs: tuple[str, ...] = ()
    containers: bool = False  # starts a container: left out by --quick
    # Whether a failure stops runs (every failure does, unless the check says otherwise here).
    blocks: Callable[[Doctor], bool] = _always
    hung_hint: str | None = None


_ENGINE_HUNG = "the Docker engine does not answer: check `docker info` and the daemon's log (journalctl -u docker)"

CHECKS: tuple[Check, ...] = (
    Check("config", "launcher.toml parses and its values are allowed", checks.check_config),
    Check("case-root", "the case root (and .launcher/, the worktrees folder) take a file", checks.check_case_root),
    Check(
        "coordinator",
        "the state store answers; its schema version against this launcher's",
        checks.check_coordinator,
        needs=("config",),
    ),
    Check(
        "disk", "free space under the root against [run] disk_reserve and disk", checks.check_disk, needs=("config",)
    ),
    Check("git-host", "the host's git and its version", checks.check_git_host),
    Check(
        "engine",
        "Docker answers: its version, API version, storage driver",
        checks.check_engine,
        hung_hint=_ENGINE_HUNG,
    ),
    Check(
        "agent-image",
        "the default agent image is present, and the build of its context's content hash",
        checks.check_agent_image,
        needs=("config", "engine"),
        hung_hint=_ENGINE_HUNG,
    ),
    Check(
        "proxy-image",
        "the egress proxy's image is present and current",
        checks.check_proxy_image,
        needs=("config", "engine"),
        blocks=checks.network_used,
        hung_hint=_ENGINE_HUNG,
    ),
    Check(
        "git-image",
        "git runs in the agent image as a run's uid, on the run's security profile",
        checks.check_git_image,
        needs=("agent-image",),
        containers=True,
        hung_hint=_ENGINE_HUNG,
    ),
    Check(
        "home-tmp",
        "$HOME and /tmp are writable (and executable) in the agent image as a run's uid",
        checks.check_home_tmp,
        needs=("agent-image",),
        containers=True,
        hung_hint=_ENGINE_HUNG,
    ),
    Check(
        "egress-proxy",
        "the egress proxy starts (briefly, on a throwaway internal network)",
        checks.check_egress_proxy,
        needs=("proxy-image", "case-root"),
        containers=True,
        blocks=checks.network_used,
        hung_hint=_ENGINE_HUNG,
    ),
    Check(
        "allowlist",
        "hosts every run may reach resolve to public addresses, which the proxy accepts",
        checks.check_allowlist,
        needs=("config",),
        hung_hint="the resolver does not answer: check /etc/resolv.conf",
    ),
)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


@dataclass(frozen=True)
class DoctorSetup:
    """What the CLI could establish before any check: the root and its configuration, or why not."""

    root: Path | None = None
    root_error: LauncherError | None = None
    config: LauncherConfig | None = None
    config_error: LauncherError | None = None
    state_url: str | None = None


class Doctor:
    def __init__(
        self,
        setup: DoctorSetup,
        host: DoctorHost,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        skip: Collection[str] = (),
        quick: bool = False,
    ) -> None:
        unknown = sorted(set(skip) - set(CHECK_NAMES))
        if unknown:
            raise InvalidInputError(f"no check {', '.join(unknown)}", hint=f"checks: {', '.join(CHECK_NAMES)}")
        self.setup, self.host, self.timeout = setup, host, timeout
        self.skip, self.quick = frozenset(skip), quick
        self.results: dict[str, CheckResult] = {}
        self._probe_lock = threading.Lock()
        self._probe: ProbeOutput | LauncherError | None = None

    # -- what the checks share --------------------------------------------------------------

    @property
    def config_or_none(self) -> LauncherConfig | None:
        return self.setup.config if self.setup.config_error is None else None

    @property
    def config(self) -> LauncherConfig:
        config = self.config_or_none
        if config is None:
            raise NotChecked("launcher.toml could not be read")
        return config

    @property
    def layout(self) -> Layout | None:
        if self.setup.root is None:
            return None
        return Layout(self.setup.root, self.config_or_none)

    def result_detail(self, name: str) -> str | None:
        found = self.results.get(name)
        return found.detail if found is not None and found.status == "ok" else None

    def image_probe(self) -> ProbeOutput:
        """The agent image's check container, started once for the checks that read it."""
        with self._probe_lock:
            if self._probe is None:
                if self.setup.root is None:
                    raise NotChecked("no case root")
                ref, _ = checks.agent_image(self)
                spec = probe_spec(ref, self.setup.root, self.config.run)
                try:
                    self._probe = run_probe(self.host.sandbox(), spec, self.timeout * 0.8)
                except LauncherError as exc:
                    self._probe = exc
            if isinstance(self._probe, LauncherError):
                raise self._probe
            return self._probe

    # -- running ----------------------------------------------------------------------------

    def run(self, report: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
        for check in CHECKS:
            result = self._one(check)
            self.results[check.name] = result
            if report is not None:
                report(result)
        return list(self.results.values())

    def _one(self, check: Check) -> CheckResult:
        def skipped(why: str) -> CheckResult:
            return CheckResult(name=check.name, status="skip", detail=why)

        if check.name in self.skip:
            return skipped("skipped (--skip)")
        if self.quick and check.containers:
            return skipped("skipped (--quick: it starts a container)")
        for need in check.needs:
            before = self.results.get(need)
            if before is not None and before.status == "fail":
                return skipped(f"not checked: {need} failed")
            if before is not None and before.status == "skip":
                # The first cause, not the chain: "engine failed", not "agent-image was not checked".
                return skipped(
                    before.detail if before.detail.startswith("not checked:") else f"not checked: {need} was skipped"
                )
        verdict = self._bounded(check)
        blocking = verdict.status == "fail" and (
            verdict.blocking if verdict.blocking is not None else self._blocks(check)
        )
        return CheckResult(
            name=check.name, status=verdict.status, detail=verdict.detail, hint=verdict.hint, blocking=blocking
        )

    def _blocks(self, check: Check) -> bool:
        try:
            return check.blocks(self)
        except NotChecked:
            return True

    def _bounded(self, check: Check) -> Verdict:
        box: list[Verdict] = []

        def target() -> None:
            try:
                box.append(check.run(self))
            except NotChecked as exc:
                box.append(Verdict("skip", f"not checked: {exc.reason}"))
            except LauncherError as exc:
                box.append(checks.fail(exc.message, exc.hint or f"see `launcher doctor --help` for {check.name}"))
            except Exception as exc:  # a check must not take doctor down: its failure is a finding
                box.append(checks.fail(f"the check itself failed: {type(exc).__name__}: {exc}", "report this"))

        thread = threading.Thread(target=target, name=f"doctor-{check.name}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive() or not box:
            return checks.fail(
                f"no answer within {self.timeout:g} s",
                check.hung_hint or f"rerun with a longer --timeout, or --skip {check.name}",
            )
        return box[0]


def exit_code(results: Collection[CheckResult]) -> int:
    """1 when a failure stops runs (a container healthcheck's "unhealthy"); warnings never fail."""
    return ExitCode.FAILURE if any(r.blocking for r in results) else ExitCode.OK


__all__ = ["CHECKS", "CHECK_NAMES", "DEFAULT_TIMEOUT_S", "Check", "Doctor", "DoctorSetup", "exit_code"]

"""The rules of `launcher doctor`: what each check looks at and what its findings mean.

A check returns a Verdict (ok, warn, fail) or raises NotChecked; a LauncherError it lets through
is a failure with that error's message and hint (launcher.core.doctor runs them).
"""

from __future__ import annotations

import ipaddress
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from launcher.core import agents
from launcher.core.doctor.ports import ImageFacts
from launcher.core.doctor.probe import ProbeOutput
from launcher.core.netpolicy import build_policy, check_allow_private
from launcher.egress.addresses import address_refusal
from launcher.errors import HostStorageError, InvalidInputError
from launcher.models import CheckStatus

if TYPE_CHECKING:
    from launcher.core.doctor import Doctor

# What launcher's host git calls need (launcher/adapters/git.py): a harvest fetches with
# --no-write-fetch-head (2.29); `merge` and `apply` use merge-tree --write-tree --merge-base (2.40).
GIT_NEEDED = (2, 29)
GIT_FOR_MERGE = (2, 40)
# A storage driver that copies every layer in full: each run's container costs the image's size.
SLOW_DRIVERS = frozenset({"vfs"})


class NotChecked(Exception):
    """A check's way of saying "skip": what it needs is not there (no case root, no config)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verdict:
    status: CheckStatus
    detail: str
    hint: str | None = None
    # None: as the check declares (launcher.core.doctor.Check.blocks).
    blocking: bool | None = None


def ok(detail: str) -> Verdict:
    return Verdict("ok", detail)


def warn(detail: str, hint: str) -> Verdict:
    return Verdict("warn", detail, hint)


def fail(detail: str, hint: str, *, blocking: bool | None = None) -> Verdict:
    return Verdict("fail", detail, hint, blocking)


def size_text(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


# -- the case root, its configuration and its coordinator -------------------------------------


def check_config(d: Doctor) -> Verdict:
    s = d.setup
    if s.root is None:
        raise NotChecked("no case root")
    if s.config_error is not None:
        return fail(s.config_error.message, s.config_error.hint or "fix launcher.toml (`launcher init` writes one)")
    config = d.config
    try:
        check_allow_private(config.network.allow_private, subnet_pool=config.network.subnet_pool)
        agents.resolve(config.agent, None)
    except InvalidInputError as exc:
        return fail(exc.message, exc.hint or "fix launcher.toml")
    path = s.root / "launcher.toml"
    if not path.exists():
        return ok(f"no {path}: every setting at its default")
    return ok(str(path))


def check_case_root(d: Doctor) -> Verdict:
    s = d.setup
    if s.root is None:
        error = s.root_error
        message = error.message if error else "no case root"
        return fail(
            message, (error.hint if error else None) or "name it: `launcher --root PATH doctor`, or CASE_ROOT=PATH"
        )
    folders = [s.root]
    layout = d.layout
    state_dir = layout.state_dir if layout else s.root / ".launcher"
    if state_dir.is_dir():
        folders.append(state_dir)
    if layout is not None:
        worktrees = layout.worktrees_dir
        if worktrees.is_dir() and not worktrees.is_relative_to(state_dir):
            folders.append(worktrees)
    for folder in folders:
        try:
            d.host.probe_write(folder)
        except OSError as exc:
            hint = HostStorageError.of(exc, "write").hint or "check the case root's disk and permissions"
            return fail(f"cannot write in {folder}: {exc.strerror or exc}", hint)
    written = ", ".join(str(f) for f in folders)
    if not state_dir.is_dir():
        return warn(
            f"{s.root} is writable, but launcher has not been set up here (no {state_dir.name}/)",
            f"`launcher --root {s.root} init` makes its state store, tasks/active/ and launcher.toml",
        )
    return ok(f"writable: {written}")


def check_coordinator(d: Doctor) -> Verdict:
    url = d.setup.state_url
    if url is None:
        raise NotChecked("no state URL")
    facts = d.host.store(url)
    where, known = facts.where, facts.known_version
    if not facts.exists:
        return warn(f"no state store at {where} yet", "`launcher init` makes it (the first run would too)")
    if facts.schema_version is None:
        return ok(f"{where}: reachable, no launcher tables yet (made on first use, schema {known})")
    found = facts.schema_version
    if found > known:
        return fail(
            f"{where} has schema version {found}, newer than this launcher understands ({known})",
            "upgrade launcher to the version that wrote it (every launcher sharing a coordinator needs it)",
        )
    if found < known:
        return warn(
            f"{where} has schema version {found}; this launcher's is {known}: its next command migrates it",
            "upgrade every launcher that shares this coordinator first: an older one refuses a migrated store",
        )
    d.host.open_store(url)
    return ok(f"{where}: schema version {found} (this launcher's)")


def check_disk(d: Doctor) -> Verdict:
    from launcher.core.run.disk import RESERVE_SHARE

    layout = d.layout
    if layout is None:
        raise NotChecked("no case root")
    run = d.config.run
    worktrees = layout.worktrees_dir
    folders = [worktrees if worktrees.exists() else layout.root]
    if layout.state_dir.exists():
        folders.append(layout.state_dir)
    free = min(d.host.free_space(f) for f in folders)
    if "disk_reserve" in run.model_fields_set:
        reserve = run.disk_reserve
    else:
        reserve = min(run.disk_reserve, min(d.host.disk_size(f) for f in folders) // RESERVE_SHARE)
    where = folders[0]
    said = f"{size_text(free)} free under {where}; [run] disk_reserve {size_text(reserve)}"
    if free < reserve:
        return fail(
            f"{said}: no run starts below the reserve (exit 7)",
            "free space (`launcher gc --older-than 7d` prunes old runs' logs and bundles), or lower [run] disk_reserve",
        )
    if free < reserve + run.disk:
        return warn(
            f"{said}, [run] disk {size_text(run.disk)}: one run at its budget would reach the reserve "
            "and be stopped (`exceeded`)",
            "free space, or lower [run] disk to what a run needs",
        )
    return ok(f"{said}, a run's budget ([run] disk) {size_text(run.disk)}")


# -- git ---------------------------------------------------------------------------------------


def git_version_tuple(text: str) -> tuple[int, ...] | None:
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups(default="0"))


def check_git_host(d: Doctor) -> Verdict:
    text = d.host.git_version()
    version = git_version_tuple(text)
    shown = text.removeprefix("git version ").strip()
    if version is None:
        return warn(f"cannot tell the version of the host's git from {text!r}", "check `git --version`")
    if version < GIT_NEEDED:
        return fail(
            f"host git {shown}: launcher needs {'.'.join(map(str, GIT_NEEDED))} or later",
            "install a newer git (Debian bookworm has 2.39; backports or git-scm.com have newer)",
        )
    if version < GIT_FOR_MERGE:
        return warn(
            f"host git {shown}: runs work; `launcher merge` and `apply` need "
            f"{'.'.join(map(str, GIT_FOR_MERGE))} (git merge-tree --merge-base)",
            "install git 2.40 or later for merge and apply",
        )
    return ok(f"host git {shown}")


def check_git_image(d: Doctor) -> Verdict:
    probe = d.image_probe()
    if not probe.finished:
        return fail(f"the check container of {probe.image} did not finish: {probe.tail or 'no output'}", _IMAGE_HINT)
    if probe.git_problem == "missing":
        return fail(
            f"no git in {probe.image}: a run's entry commits and bundles with it",
            "build the agent image FROM launcher/agent-base, or install git in it",
        )
    if probe.git_problem is not None or probe.git is None:
        return fail(
            f"git in {probe.image} does not run as a run's uid ({_uid(probe)}): {probe.git_problem or 'no output'}",
            "git must run as an arbitrary uid with a read-only root file system; rebuild the image",
        )
    host = d.result_detail("git-host")
    versus = f"; {host}" if host else ""
    return ok(f"{probe.git.removeprefix('git version ')} in {probe.image} (as uid {_uid(probe)}){versus}")


def _uid(probe: ProbeOutput) -> str:
    return probe.user.partition(":")[0]


_IMAGE_HINT = "run the image by hand (`docker run --rm IMAGE sh -c 'echo hi'`); rebuild it with `launcher image build`"


def check_home_tmp(d: Doctor) -> Verdict:
    probe = d.image_probe()
    if not probe.finished or not probe.dirs:
        return fail(f"the check container of {probe.image} did not finish: {probe.tail or 'no output'}", _IMAGE_HINT)
    broken = [s for s in probe.dirs if not s.writable]
    if broken:
        said = "; ".join(f"{s.path}: {s.error or 'not writable'}" for s in broken)
        return fail(
            f"not writable as a run's uid ({_uid(probe)}) in {probe.image}: {said}",
            "runs get a tmpfs at /tmp and $HOME owned by their uid: check [run] runtime, and that the image "
            "makes neither path a symlink or a VOLUME",
        )
    noexec = [s.path for s in probe.dirs if not s.executable]
    paths = " and ".join(s.path for s in probe.dirs)
    if noexec:
        return warn(
            f"{paths} writable as uid {_uid(probe)}, but a file in {', '.join(noexec)} cannot be run",
            "a venv or a tool that unpacks a binary there will fail: check [run] runtime's tmpfs options",
        )
    return ok(f"{paths} writable and executable as uid {_uid(probe)} (read-only root, capabilities dropped)")


# -- the engine and its images ---------------------------------------------------------------


def check_engine(d: Doctor) -> Verdict:
    facts = d.host.engine()
    detail = (
        f"Docker Engine {facts.version} (API {facts.api_version}, launcher speaks {facts.client_api_version}), "
        f"storage driver {facts.storage_driver}"
    )
    runtime = d.config.run.runtime if d.config_or_none is not None else None
    if runtime and runtime not in facts.runtimes:
        return fail(
            f"{detail}; [run] runtime {runtime!r} is not one of the engine's ({', '.join(facts.runtimes) or 'none'})",
            f"install {runtime} and register it in /etc/docker/daemon.json (then restart Docker), "
            "or unset [run] runtime",
        )
    if facts.storage_driver in SLOW_DRIVERS:
        return warn(
            f"{detail}: it copies every image layer in full for each container",
            "configure overlay2 (or fuse-overlayfs) as the engine's storage driver",
        )
    return ok(detail)


def agent_image(d: Doctor) -> tuple[str, str]:
    """The image a run uses when neither the task nor the command line names one, and why."""
    config = d.config
    found = agents.resolve(config.agent, None)
    if found is not None and found[1].image:
        return found[1].image, f"[agent] default {found[0]!r}"
    return config.run.image, "[run] image"


def image_verdict(facts: ImageFacts, *, where: str, other: str) -> Verdict:
    ref = facts.ref
    build = f"`launcher image build {facts.context_name}`" if facts.context_name else None
    if facts.image_id is None:
        return fail(
            f"{ref} ({where}) is not in the local Docker engine",
            f"build it with {build}" if build else f"pull or build {ref}, or name another in {other}",
        )
    short = facts.image_id.removeprefix("sha256:")[:12]
    if facts.current_tag is None:
        why = facts.context_problem or "not built from launcher's images, so not checked for currency"
        return ok(f"{ref} ({where}) present, {short}; {why}")
    rebuild = f"rebuild it: {build}" if build else f"rebuild {ref}"
    if facts.current_id is None:
        return warn(
            f"{ref} ({where}) present, {short}, but not the current build: no {facts.current_tag} "
            "(the build context's content hash)",
            rebuild,
        )
    if facts.current_id != facts.image_id:
        return warn(
            f"{ref} ({where}) is {short}, not the current build {facts.current_tag} "
            f"({facts.current_id.removeprefix('sha256:')[:12]})",
            rebuild,
        )
    return ok(f"{ref} ({where}) present and current: {facts.current_tag}")


def check_agent_image(d: Doctor) -> Verdict:
    ref, where = agent_image(d)
    if ref == "devcontainer":
        return ok(f"{where} = devcontainer: each repository's own environment, built and checked as a run starts")
    return image_verdict(d.host.image(ref), where=where, other="[run] image")


def check_proxy_image(d: Doctor) -> Verdict:
    return image_verdict(
        d.host.image(d.config.network.proxy_image), where="[network] proxy_image", other="[network] proxy_image"
    )


def network_used(d: Doctor) -> bool:
    """Whether runs get a network by default: the proxy blocks them only then."""
    config = d.config_or_none
    return config is None or config.network.mode != "none"


def check_egress_proxy(d: Doctor) -> Verdict:
    layout = d.layout
    if layout is None:
        raise NotChecked("no case root")
    config = d.config
    said = d.host.try_proxy(layout.root, layout.state_dir, config.network, config.run)
    return ok(said)


# -- what runs may reach -----------------------------------------------------------------------


@dataclass(frozen=True)
class HostLookup:
    host: str
    addresses: list[str] | None = None
    error: str | None = None


def resolve_all(resolve: Callable[[str], list[str]], hosts: list[str], timeout: float) -> list[HostLookup]:
    """Every host's lookup at once, each bounded: a resolver that hangs answers nothing in time."""
    found: dict[str, HostLookup] = {}

    def look(host: str) -> None:
        try:
            found[host] = HostLookup(host, addresses=resolve(host))
        except OSError as exc:
            found[host] = HostLookup(host, error=str(exc.strerror or exc))

    threads = [threading.Thread(target=look, args=(h,), daemon=True, name=f"doctor-dns-{h}") for h in hosts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    return [found.get(h) or HostLookup(h, error=f"no answer within {timeout:g} s") for h in hosts]


def check_allowlist(d: Doctor) -> Verdict:
    config = d.config
    net = config.network
    presets, allow = list(net.presets), list(net.allow)
    profile = agents.resolve(config.agent, None)
    if profile is not None:
        presets += profile[1].presets
        allow += profile[1].allow
    try:
        policy = build_policy("allowlist", allow, presets, [], net.preset)
        private = check_allow_private(net.allow_private, subnet_pool=net.subnet_pool)
    except InvalidInputError as exc:
        return fail(exc.message, exc.hint or "fix [network] in launcher.toml")
    hosts = list(dict.fromkeys(rule.host for rule in policy.allow if not rule.host.startswith("*.")))
    wildcards = sorted({rule.host for rule in policy.allow if rule.host.startswith("*.")})
    later = f"; {', '.join(wildcards)} resolved as runs ask" if wildcards else ""
    if not hosts:
        where = "[network] allow and presets" + (f", [agent] default {profile[0]!r}" if profile else "")
        return ok(
            f"no host to resolve ({where}){later}" if wildcards else f"no host is allowlisted for every run ({where})"
        )
    deny = [ipaddress.ip_address(a) for a in d.host.host_addresses([str(n) for n in private])]
    public = [ipaddress.ip_network(c, strict=False) for c in d.host.public_cidrs()]
    refused: dict[str, str] = {}
    unresolved: dict[str, str] = {}
    for lookup in resolve_all(d.host.resolve, hosts, d.timeout * 0.8):
        if not lookup.addresses:
            unresolved[lookup.host] = f"{lookup.host} does not resolve ({lookup.error or 'no addresses'})"
            continue
        reasons = [r for r in (address_refusal(a, public, deny, private) for a in lookup.addresses) if r]
        if reasons:
            refused[lookup.host] = f"{lookup.host} resolves to {'; '.join(dict.fromkeys(reasons))}"
    if refused:
        return fail(
            f"the proxy would refuse {', '.join(refused)}: {'; '.join([*refused.values(), *unresolved.values()])}",
            "take each out of [network] allow (or its preset), or fix its DNS; for an internal mirror, name "
            "its range in [network] allow_private",
        )
    if unresolved:
        public_ones = len(hosts) - len(unresolved)
        return warn(
            f"{'; '.join(unresolved.values())}" + (f"; {public_ones} other(s) public" if public_ones else ""),
            "check the names: until one resolves, runs get a 403 for it",
        )
    return ok(f"{len(hosts)} host(s) resolve to public addresses: {', '.join(hosts)}{later}")

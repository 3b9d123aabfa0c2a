"""The Docker side of egress: each run's own network, and the one proxy per launcher root.

A run's network is internal, IPv6-less, and its bridge holds no host address
(``inhibit_ipv4``): on Engine < 25 a plain internal network still lets containers reach the
host's services through the bridge's gateway address. The proxy is the only other member of
that network; it is connected to every live run's network and reaches the internet through an
ordinary network of its own. The proxy reads one policy file per run and appends one decision
log per run, both in folders under the case root's state folder, which runs never see.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from launcher.adapters.docker.client import docker_client, image_id, wait_for_output
from launcher.adapters.faults import fault_point
from launcher.adapters.locks import file_lock
from launcher.adapters.safe_io import atomic_write
from launcher.core import labels as launcher_labels
from launcher.core.netpolicy import PROXY_PORT
from launcher.core.subnets import RunSubnet
from launcher.egress.idle import EXITING as IDLE_EXITING
from launcher.egress.idle import IDLE_LOCK
from launcher.errors import DockerError, SubnetInUseError
from launcher.models import NetworkInfo

if TYPE_CHECKING:
    from launcher.settings import NetworkSettings

# The program folder is mounted as the package "egress" in a folder that holds nothing else.
# `python3 -I` ignores PYTHON* variables and user site-packages and (through -P) keeps the cwd
# off sys.path; PROXY_BOOT then puts that folder, its first argument, first on sys.path.
CONTAINER_PROGRAM_PARENT = "/launcher"
CONTAINER_PROGRAM = f"{CONTAINER_PROGRAM_PARENT}/egress"
PROXY_BOOT = (
    "import sys; sys.path.insert(0, sys.argv.pop(1)); from egress.__main__ import main; raise SystemExit(main())"
)
CONTAINER_POLICIES = "/egress/policies"
CONTAINER_LOGS = "/egress/logs"
CONTAINER_CA = "/egress/extra-ca.pem"
PROXY_READY_TIMEOUT_S = 20.0
# How long a run waits for a proxy that has decided to exit to be gone (it closes in well
# under a second: it exits only with no connection open).
PROXY_EXIT_WAIT_S = 30.0
# The proxy's lines are a few hundred bytes (a host is cut at 300 characters).
DECISION_LINE_MAX = 64 * 1024
_READY_LINE = b"egress proxy listening"


class ProxySettings(BaseModel):
    """Everything that shapes the proxy container; a change replaces the running proxy."""

    model_config = ConfigDict(frozen=True)

    root: str
    name: str
    image: str
    egress_network: str
    uid: int
    gid: int
    program_dir: str  # the folder install_egress_proxy filled with the proxy's program
    program_sha256: str  # egress_proxy_sha256 of that folder: a changed file replaces the proxy
    policies_dir: str
    logs_dir: str
    ca_file: str | None = None
    public_cidrs: list[str] = Field(default_factory=list)
    # [network] allow_private, checked by launcher.core.netpolicy.check_allow_private.
    private_allowed: list[str] = Field(default_factory=list)
    deny_addrs: list[str] = Field(default_factory=list)
    idle_exit: float = 0.0  # seconds without runs before the proxy exits by itself; 0: never

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]

    @classmethod
    def of(
        cls,
        net: NetworkSettings,
        *,
        root: Path,
        name: str,
        egress_network: str,
        ids: tuple[int, int],
        program: Path,
        program_sha256: str,
        policies: Path,
        logs: Path,
        private_allowed: list[str],
    ) -> ProxySettings:
        """A proxy for ``root`` as [network] says (``private_allowed``: its allow_private, checked)."""
        return cls(
            root=str(root),
            name=name,
            image=net.proxy_image,
            egress_network=egress_network,
            uid=ids[0],
            gid=ids[1],
            program_dir=str(program),
            program_sha256=program_sha256,
            policies_dir=str(policies),
            logs_dir=str(logs),
            ca_file=str(Path(net.ca_file).resolve()) if net.ca_file else None,
            # Test-only: lets the proxy treat a local test network as the internet.
            public_cidrs=[c for c in os.environ.get("LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS", "").split(",") if c],
            private_allowed=private_allowed,
            deny_addrs=host_addresses(private_allowed),
            idle_exit=net.proxy_idle,
        )


class DockerEgress:
    def __init__(
        self, settings: ProxySettings, lock_path: Path, client_factory: Callable[[], Any] = docker_client
    ) -> None:
        self.settings = settings
        self.lock_path = lock_path
        self._client_factory = client_factory
        self._client: Any | None = None

    @property
    def client(self) -> Any:
        # Shared with the run's sandbox where possible: every new client pings the engine first.
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    # -- per-run networks -------------------------------------------------------------------

    def check_image(self) -> None:
        image_id(
            self.client,
            self.settings.image,
            what="the egress proxy image",
            hint="build it with `launcher image build egress-proxy`, or run with --network none",
        )

    def create_network(self, name: str, subnet: RunSubnet, labels: dict[str, str]) -> None:
        from docker.errors import APIError
        from docker.types import IPAMConfig, IPAMPool

        fault_point("egress.network")
        try:
            self.client.networks.create(
                name,
                driver="bridge",
                internal=True,
                enable_ipv6=False,
                check_duplicate=True,
                ipam=IPAMConfig(pool_configs=[IPAMPool(subnet=subnet.cidr, gateway=subnet.gateway)]),
                options={
                    "com.docker.network.bridge.inhibit_ipv4": "true",
                    "com.docker.network.bridge.enable_ip_masquerade": "false",
                    "com.docker.network.bridge.enable_icc": "true",
                },
                labels=launcher_labels.checked(labels),
            )
        except APIError as exc:
            text = str(exc.explanation or exc)
            if "overlap" in text.lower():
                raise SubnetInUseError(f"subnet {subnet.cidr} is already used on this engine: {text}") from exc
            raise DockerError(f"cannot create the run's network {name}: {text}") from exc

    def remove_network(self, name: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            network = self.client.networks.get(name)
            network.reload()
            for container in network.attrs.get("Containers") or {}:
                with contextlib.suppress(NotFound):
                    network.disconnect(container, force=True)
            network.remove()
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code != 404:
                raise DockerError(f"cannot remove network {name}: {exc.explanation or exc}") from exc

    def networks(self) -> list[NetworkInfo]:
        """This root's run networks and warm pool slots' networks: every network the proxy serves."""
        found = self.client.networks.list(filters={"label": [f"{launcher_labels.ROOT}={self.settings.root}"]})
        infos = [NetworkInfo(id=n.id, name=n.name, labels=dict(n.attrs.get("Labels") or {})) for n in found]
        return [i for i in infos if i.labels.get(launcher_labels.KIND) in launcher_labels.RUN_NETWORK_KINDS]

    def members(self, network: str) -> list[str] | None:
        from docker.errors import NotFound

        try:
            found = self.client.networks.get(network)
        except NotFound:
            return None
        return sorted(str(c.get("Name") or key) for key, c in (found.attrs.get("Containers") or {}).items())

    @property
    def proxy_name(self) -> str:
        return self.settings.name

    # -- the proxy --------------------------------------------------------------------------

    def attach_proxy(self, network: str, ip: str) -> None:
        """Make sure this root's proxy runs, and connect it to ``network`` at ``ip``.

        The run's policy file is written before this, and the proxy's exit lock is held while
        the proxy is looked at: a proxy that decided to exit (launcher/egress/idle.py) holds it
        until it is gone and leaves its mark, so it is replaced, never used (see idle.py).
        """
        with file_lock(self.lock_path, guards="engine"):
            lock = self._exit_lock()
            with file_lock(lock, timeout=PROXY_EXIT_WAIT_S, guards="engine"):
                proxy = self._ensure_proxy(exiting=_read_mark(lock) == IDLE_EXITING)
                self._connect(proxy, network, ip)

    def remove_proxy_if_idle(self) -> bool:
        """Remove the proxy when no run network of this root remains; True when it was removed."""
        with file_lock(self.lock_path, guards="engine"):
            if self.networks():
                return False
            return self._remove_proxy()

    def proxy_status(self) -> str | None:
        from docker.errors import NotFound

        try:
            return str(self.client.containers.get(self.settings.name).status)
        except NotFound:
            return None

    def _remove_proxy(self) -> bool:
        from docker.errors import APIError, NotFound

        try:
            self.client.containers.get(self.settings.name).remove(force=True)
        except NotFound:
            return False
        except APIError as exc:
            if exc.status_code in (404, 409):
                return False
            raise DockerError(f"cannot remove the egress proxy: {exc.explanation or exc}") from exc
        return True

    def _exit_lock(self) -> Path:
        """The proxy's exit lock in its logs folder, there and the proxy's own before it is used."""
        path = Path(self.settings.logs_dir) / IDLE_LOCK
        # The folder is the proxy's to write: never open what a link there names, never block
        # on a FIFO, and replace anything that is not a plain file.
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            path.unlink()
            fd = os.open(path, flags | os.O_EXCL, 0o600)
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                path.unlink()
                fd = os.open(path, flags | os.O_EXCL, 0o600)
            if os.geteuid() == 0:
                os.fchown(fd, self.settings.uid, self.settings.gid)
        finally:
            os.close(fd)
        return path

    def _ensure_proxy(self, *, exiting: bool = False) -> Any:
        from docker.errors import NotFound

        try:
            proxy = self.client.containers.get(self.settings.name)
        except NotFound:
            proxy = None
        if proxy is not None and (
            exiting
            or proxy.labels.get(launcher_labels.PROXY_CONFIG) != self.settings.fingerprint
            or proxy.status != "running"
        ):
            # Stale program or settings, exiting for want of runs, or dead: replace it; live
            # runs are reconnected below.
            self._remove_proxy()
            proxy = None
        if proxy is not None:
            return proxy
        # The mark was the old proxy's; the new one starts unmarked.
        _clear_mark(Path(self.settings.logs_dir) / IDLE_LOCK)
        proxy = self._create_proxy()
        for network in self.networks():
            ip = network.labels.get(launcher_labels.PROXY_IP)
            if ip:
                self._connect(proxy, network.name, ip)
        return proxy

    def _create_proxy(self) -> Any:
        from docker.errors import APIError
        from docker.types import Mount

        s = self.settings
        fault_point("egress.proxy")
        command = ["python3", "-I", "-c", PROXY_BOOT, CONTAINER_PROGRAM_PARENT, "--listen", f"0.0.0.0:{PROXY_PORT}"]
        command += ["--policies", CONTAINER_POLICIES, "--logs", CONTAINER_LOGS]
        for cidr in s.public_cidrs:
            command += ["--public-cidr", cidr]
        for cidr in s.private_allowed:
            command += ["--allow-private", cidr]
        for addr in self._denied_addresses():
            command += ["--deny-addr", addr]
        mounts = [
            Mount(CONTAINER_PROGRAM, s.program_dir, type="bind", read_only=True),
            Mount(CONTAINER_POLICIES, s.policies_dir, type="bind", read_only=True),
            Mount(CONTAINER_LOGS, s.logs_dir, type="bind"),
        ]
        if s.ca_file:
            mounts.append(Mount(CONTAINER_CA, s.ca_file, type="bind", read_only=True))
            command += ["--ca-file", CONTAINER_CA]
        if s.idle_exit > 0:
            # An idle exit is status 0, which the restart policy below leaves stopped.
            command += ["--idle-exit", f"{s.idle_exit:g}"]
        try:
            container = self.client.containers.create(
                image=s.image,
                command=command,
                name=s.name,
                user=f"{s.uid}:{s.gid}",
                labels=launcher_labels.checked(
                    launcher_labels.for_root(
                        Path(s.root), "egress-proxy", **{launcher_labels.PROXY_CONFIG: s.fingerprint}
                    )
                ),
                mounts=mounts,
                network=s.egress_network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                pids_limit=256,
                mem_limit="256m",
                init=True,
                restart_policy={"Name": "on-failure", "MaximumRetryCount": 5},
                detach=True,
            )
            container.start()
        except APIError as exc:
            raise DockerError(f"cannot start the egress proxy: {exc.explanation or exc}") from exc
        # The proxy says when it listens; until then a run's first request would be refused.
        wait_for_output(container, _READY_LINE, PROXY_READY_TIMEOUT_S, what="the egress proxy")
        return container

    def _denied_addresses(self) -> list[str]:
        """The host's addresses; with private ranges allowed, also the egress network's gateway.

        The gateway is the host as the proxy sees it, even where launcher itself runs in a
        container and so cannot list the host's addresses.
        """
        s = self.settings
        found = list(s.deny_addrs)
        if s.private_allowed:
            from docker.errors import APIError, NotFound

            try:
                network = self.client.networks.get(s.egress_network)
            except (NotFound, APIError) as exc:
                raise DockerError(f"cannot look at the egress network {s.egress_network}: {exc}") from exc
            for entry in (network.attrs.get("IPAM") or {}).get("Config") or []:
                gateway = entry.get("Gateway")
                if gateway and gateway not in found:
                    found.append(gateway)
        return found

    def _connect(self, proxy: Any, network: str, ip: str) -> None:
        from docker.errors import APIError

        try:
            self.client.api.connect_container_to_network(proxy.id, network, ipv4_address=ip)
        except APIError as exc:
            if "already exists" not in str(exc.explanation or exc):
                raise DockerError(f"cannot connect the egress proxy to {network}: {exc.explanation or exc}") from exc


def _read_mark(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        return os.read(fd, 64) if stat.S_ISREG(os.fstat(fd).st_mode) else b""
    finally:
        os.close(fd)


def _clear_mark(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return  # gone, or not a plain file: _exit_lock replaces it before the next look
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


class EgressFiles:
    """The proxy's inputs and outputs on the host: policy files in, decision logs out."""

    def __init__(self, policies_dir: Path, logs_dir: Path, proxy_ids: tuple[int, int]) -> None:
        self.policies_dir, self.logs_dir, self.proxy_ids = policies_dir, logs_dir, proxy_ids

    def prepare(self) -> None:
        for folder in (self.policies_dir, self.logs_dir):
            folder.mkdir(parents=True, exist_ok=True)
            os.chmod(folder, 0o700)
            if os.geteuid() == 0:
                os.chown(folder, *self.proxy_ids)

    def write_policy(self, run_id: str, document: dict[str, Any]) -> None:
        # 0600 and the proxy's own: the file may hold API keys.
        owner = self.proxy_ids if os.geteuid() == 0 else None
        data = json.dumps(document, indent=1).encode()
        atomic_write(self.policies_dir / f"{run_id}.json", data, mode=0o600, owner=owner)

    def remove_policy(self, run_id: str) -> None:
        (self.policies_dir / f"{run_id}.json").unlink(missing_ok=True)

    def policy_runs(self) -> list[str]:
        if not self.policies_dir.is_dir():
            return []
        return sorted(p.stem for p in self.policies_dir.glob("*.json"))

    def log_name(self, run_id: str) -> str:
        return f"{run_id}.jsonl"

    def live_log(self, run_id: str) -> Path:
        return self.logs_dir / self.log_name(run_id)

    def take_log(self, run_id: str, dest: Path) -> Iterator[dict[str, Any]]:
        """Move the run's decision log, every line of it, next to its other logs; its decisions."""
        if not _move_log(self.live_log(run_id), dest):
            return iter(())
        return _decisions(dest)


def _move_log(source: Path, dest: Path) -> bool:
    """True when ``dest`` now holds the log. The proxy's folder is the proxy's to write: a
    symlink or anything but a plain file found there is dropped, never read through."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, dest)  # moves a symlink itself, never what it names
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        _copy_plain_file(source, dest)
        source.unlink(missing_ok=True)
    if not stat.S_ISREG(dest.lstat().st_mode):
        dest.unlink()
        return False
    return True


def _copy_plain_file(source: Path, dest: Path) -> None:
    """A log on another file system than the run's folder: copied in chunks, no symlink followed."""
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOENT):
            return
        raise
    with os.fdopen(fd, "rb") as src:
        if not stat.S_ISREG(os.fstat(src.fileno()).st_mode):
            return
        tmp = dest.with_name(f".{dest.name}.tmp")
        with open(tmp, "wb") as out:
            shutil.copyfileobj(src, out, DECISION_LINE_MAX)
        os.chmod(tmp, 0o600)
        os.replace(tmp, dest)


def _decisions(path: Path) -> Iterator[dict[str, Any]]:
    """The log's decisions one at a time (memory stays small whatever its size); lines that are
    not a JSON object, or longer than any line the proxy writes, are skipped."""
    with open(path, "rb") as handle:
        while line := handle.readline(DECISION_LINE_MAX):
            if not line.endswith(b"\n") and len(line) == DECISION_LINE_MAX:
                while (rest := handle.readline(DECISION_LINE_MAX)) and not rest.endswith(b"\n"):
                    pass  # the remainder of an over-long line
                continue
            try:
                entry = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(entry, dict):
                yield entry


def host_addresses(private_in: list[str] | tuple[str, ...] = ()) -> list[str]:
    """This machine's own addresses the proxy must be told to refuse, even in open mode.

    Its global ones; private ones are refused anyway, except those inside a range of
    ``private_in`` ([network] allow_private), which are listed too.
    """
    import ipaddress

    found: set[str] = set()
    try:
        lines = Path("/proc/net/fib_trie").read_text().splitlines()
    except OSError:
        lines = []
    for previous, line in itertools.pairwise(lines):
        if "/32 host LOCAL" in line:
            found.add(previous.strip().removeprefix("|-- ").strip())
    try:
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            raw = line.split()[0]
            found.add(str(ipaddress.IPv6Address(bytes.fromhex(raw))))
    except (OSError, ValueError, IndexError):
        pass
    allowed = [ipaddress.ip_network(cidr, strict=False) for cidr in private_in]
    addresses = []
    for text in sorted(found):
        try:
            ip = ipaddress.ip_address(text)
        except ValueError:
            continue
        if ip.is_global or any(ip in net for net in allowed):
            addresses.append(text)
    return addresses

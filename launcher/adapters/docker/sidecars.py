"""What a run's sidecars need of the engine beyond a run's own container: fixed addresses, extra
networks, published ports (127.0.0.1 only), health, the image's user, and the relay's program.

A run's network is internal and its bridge holds no host address, so the engine cannot publish a
port of anything on it (measured on Engine 20.10: an internal network's container gets no port
bindings at all). A run's ports are published by a relay container instead: created on the
publishing network (``[network] egress_network``, where the egress proxy reaches out too) with
its listeners bound to the host's 127.0.0.1, then joined to the run's network at a fixed
address; it only ever connects to the run's own listeners. See ``port_relay``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from launcher.adapters.hostports import loopback_port_free
from launcher.errors import DockerError
from launcher.models import SandboxSpec

RELAY_PROGRAM = Path(__file__).with_name("port_relay.py")
_PORT_TAKEN = re.compile(r"(?:127\.0\.0\.1|0\.0\.0\.0):(\d+)")
_TAKEN_WORDS = ("port is already allocated", "address already in use")


def port_in_use(text: str) -> int | None:
    """The host port a failed start names as taken ("Bind for 127.0.0.1:N failed: port is already
    allocated", "listen tcp4 127.0.0.1:N: bind: address already in use"); None for any other failure."""
    if not any(words in text.lower() for words in _TAKEN_WORDS):
        return None
    found = _PORT_TAKEN.search(text)
    return int(found.group(1)) if found else None


def relay_command(listeners: dict[int, tuple[str, int]]) -> tuple[list[str], list[str]]:
    """Entrypoint and command of a relay: its program's text, then LISTEN=IP:PORT per listener."""
    entrypoint = ["python3", "-I", "-c", RELAY_PROGRAM.read_text(encoding="utf-8")]
    return entrypoint, [f"{listen}={ip}:{port}" for listen, (ip, port) in sorted(listeners.items())]


def network_args(client: Any, spec: SandboxSpec) -> dict[str, Any]:
    """How ``containers.create`` is told the network, the fixed address, hosts and ports."""
    args: dict[str, Any] = {}
    if spec.ip is not None:
        endpoint = client.api.create_endpoint_config(ipv4_address=spec.ip)
        args.update(network=spec.network, networking_config={spec.network: endpoint})
    else:
        args["network_mode"] = spec.network
    if spec.extra_hosts:
        args["extra_hosts"] = dict(spec.extra_hosts)
    if spec.published:
        # Never 0.0.0.0: a run's ports are the host's alone, not its neighbours'.
        args["ports"] = {f"{inner}/tcp": ("127.0.0.1", outer) for inner, outer in spec.published.items()}
    if spec.healthcheck is not None:
        test = ["CMD-SHELL", spec.healthcheck[0]] if len(spec.healthcheck) == 1 else ["CMD", *spec.healthcheck]
        args["healthcheck"] = {"test": test, "interval": 1_000_000_000, "timeout": 5_000_000_000, "retries": 3}
    return args


def join_networks(client: Any, container_id: str, join: dict[str, str]) -> None:
    from docker.errors import APIError

    for network, ip in join.items():
        try:
            client.networks.get(network).connect(container_id, ipv4_address=ip)
        except APIError as exc:
            raise DockerError(
                f"cannot join {container_id[:12]} to {network} at {ip}: {exc.explanation or exc}"
            ) from exc


class DockerSidecars:
    """Mixed into DockerSandbox (``self.client``): what launcher.core.run.services asks of it."""

    client: Any

    def health(self, container_id: str) -> str:
        """``healthy``, ``starting``, ``unhealthy``, ``running`` (no health check), ``exited``, ``gone``."""
        from docker.errors import NotFound

        try:
            state = dict(self.client.containers.get(container_id).attrs.get("State", {}))
        except NotFound:
            return "gone"
        if not state.get("Running"):
            return "exited"
        health = state.get("Health")
        return str(health.get("Status")) if isinstance(health, dict) and health.get("Status") else "running"

    def exit_status(self, container_id: str) -> int | None:
        from docker.errors import NotFound

        try:
            state = self.client.containers.get(container_id).attrs.get("State", {})
        except NotFound:
            return None
        code = state.get("ExitCode")
        return int(code) if isinstance(code, int) else None

    def image_user(self, ref: str, labels: dict[str, str]) -> str:
        """The user an image runs as (its USER) as ``uid:gid``; ``""`` for root by default.

        Numeric, because only numeric ids give a scratch folder its owner (over a folder the image
        has, Docker keeps that folder's mode and owner otherwise). A name is looked up in the
        image's /etc/passwd and /etc/group, read from a container that is created, never started.
        """
        from docker.errors import APIError, ImageNotFound

        try:
            user = str(self.client.images.get(ref).attrs.get("Config", {}).get("User") or "").strip()
        except ImageNotFound as exc:
            raise DockerError(f"image {ref} is not on this engine", hint="build or pull it first") from exc
        except APIError as exc:
            raise DockerError(f"cannot inspect image {ref}: {exc.explanation or exc}") from exc
        name, _, group = user.partition(":")
        if not name or (name.isdigit() and (not group or group.isdigit())):
            return user if not name or group else f"{name}:{name}"
        files = self._read_files(ref, ["/etc/passwd", "/etc/group"], labels)
        users = _table(files.get("/etc/passwd", ""))
        groups = _table(files.get("/etc/group", ""))
        entry = users.get(name) or next((row for row in users.values() if row[2] == name), None)
        if entry is None:
            raise DockerError(f"image {ref} runs as {user!r}, which its /etc/passwd does not name")
        uid, gid = entry[2], entry[3] if len(entry) > 3 else entry[2]
        if group:
            found = groups.get(group)
            gid = group if group.isdigit() else (found[2] if found else gid)
        return f"{uid}:{gid}"

    def _read_files(self, ref: str, paths: list[str], labels: dict[str, str]) -> dict[str, str]:
        import io
        import tarfile

        from docker.errors import APIError, NotFound

        try:
            container = self.client.containers.create(ref, entrypoint=["true"], command=[], labels=labels)
        except APIError as exc:
            raise DockerError(f"cannot look into image {ref}: {exc.explanation or exc}") from exc
        found: dict[str, str] = {}
        try:
            for path in paths:
                try:
                    stream, _stat = container.get_archive(path)
                except NotFound:
                    continue
                data = b"".join(stream)[: 8 * 1024 * 1024]
                with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                    member = tar.next()
                    handle = tar.extractfile(member) if member is not None else None
                    if handle is not None:
                        found[path] = handle.read(1024 * 1024).decode("utf-8", "replace")
        finally:
            container.remove(force=True)
        return found

    def has_healthcheck(self, ref: str) -> bool:
        from docker.errors import APIError

        try:
            check = self.client.images.get(ref).attrs.get("Config", {}).get("Healthcheck") or {}
        except APIError:
            return False
        test = check.get("Test") or []
        return bool(test) and test != ["NONE"]

    def save_logs(self, container_id: str, dest: Path, max_bytes: int) -> bool:
        """The container's output (stdout and stderr) into ``dest``, at most ``max_bytes``; False if gone."""
        from docker.errors import APIError, NotFound

        try:
            chunks = self.client.containers.get(container_id).logs(stream=True, follow=False)
        except (NotFound, APIError):
            return False
        written = 0
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest, "wb") as out:
            for chunk in chunks:
                room = max_bytes - written
                if room <= 0:
                    out.write(b"\n[launcher: the rest of the service's output was dropped]\n")
                    break
                out.write(chunk[:room])
                written += min(len(chunk), room)
        return True

    def port_free(self, port: int) -> bool:
        # The engine publishes on this host's loopback (launcher talks to a local engine).
        return loopback_port_free(port)

    def relay_command(self, listeners: dict[int, tuple[str, int]]) -> tuple[list[str], list[str]]:
        return relay_command(listeners)

    def remove_named(self, name: str) -> None:
        """Remove the container of that name if there is one (a sidecar recorded before it was made)."""
        from docker.errors import APIError, NotFound

        try:
            self.client.containers.get(name).remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code not in (404, 409):
                raise DockerError(f"cannot remove container {name}: {exc.explanation or exc}") from exc


def _table(text: str) -> dict[str, list[str]]:
    """/etc/passwd or /etc/group: name -> its colon-separated fields."""
    rows = [line.split(":") for line in text.splitlines() if line and not line.startswith("#")]
    return {row[0]: row for row in rows if len(row) >= 4}

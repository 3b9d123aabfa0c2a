"""Where a run executes: one Docker container, created with launcher's labels and the
security profile on by default. Stop/remove are idempotent and never raise for a
container that is already gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from launcher.adapters.docker.client import docker_client, image_id, wait_for_output
from launcher.adapters.faults import fault_point
from launcher.core import labels
from launcher.errors import DockerError
from launcher.models import ContainerInfo, SandboxSpec


class DockerSandbox:
    def __init__(self, client: Any | None = None) -> None:
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = docker_client()
        return self._client

    def image_id(self, ref: str) -> str:
        return image_id(self.client, ref, what="image", hint="build it with `launcher image build` or pass --image")

    def create(self, spec: SandboxSpec) -> str:
        from docker.errors import APIError
        from docker.types import Mount

        fault_point("sandbox.create")
        mounts = []
        for m in spec.mounts:
            if m.kind == "tmpfs":
                mounts.append(
                    Mount(
                        m.target,
                        None,
                        type="tmpfs",
                        read_only=m.read_only,
                        tmpfs_size=m.tmpfs_size,
                        tmpfs_mode=m.tmpfs_mode,
                    )
                )
            else:
                mounts.append(Mount(m.target, m.source, type="bind", read_only=m.read_only))
        try:
            container = self.client.containers.create(
                image=spec.image,
                command=spec.command,
                entrypoint=spec.entrypoint,
                environment=spec.env,
                user=spec.user,
                working_dir=spec.workdir,
                labels=labels.checked(spec.labels),
                mounts=mounts,
                network_mode=spec.network,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={path: "rw,nosuid,nodev,size=512m,mode=1777" for path in spec.writable_tmp},
                pids_limit=spec.pids_limit,
                mem_limit=spec.memory,
                memswap_limit=spec.memory,
                nano_cpus=int(spec.cpus * 1e9),
                init=True,
                ipc_mode="private",
                runtime=spec.runtime,
                name=spec.name,
                detach=True,
            )
        except APIError as exc:
            raise DockerError(f"cannot create the run's container: {exc.explanation or exc}") from exc
        return str(container.id)

    def start(self, container_id: str) -> None:
        from docker.errors import APIError

        fault_point("sandbox.start")
        try:
            self.client.containers.get(container_id).start()
        except APIError as exc:
            raise DockerError(f"cannot start container {container_id[:12]}: {exc.explanation or exc}") from exc

    def logs(self, container_id: str) -> Iterator[bytes]:
        container = self.client.containers.get(container_id)
        yield from container.logs(stream=True, follow=True, stdout=True, stderr=True)

    def wait(self, container_id: str, timeout: float | None) -> int | None:
        """The exit code, or None when ``timeout`` passed first."""
        import requests

        container = self.client.containers.get(container_id)
        try:
            result = container.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return None
        return int(result.get("StatusCode", -1))

    def kill(self, container_id: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.client.containers.get(container_id).kill()
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code != 409:  # 409: not running, which is what we wanted
                raise DockerError(f"cannot kill container {container_id[:12]}: {exc.explanation or exc}") from exc

    def remove(self, container_id: str) -> None:
        from docker.errors import APIError, NotFound

        try:
            self.client.containers.get(container_id).remove(force=True)
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code not in (404, 409):
                raise DockerError(f"cannot remove container {container_id[:12]}: {exc.explanation or exc}") from exc

    def inspect_state(self, container_id: str) -> dict[str, Any] | None:
        from docker.errors import NotFound

        try:
            container = self.client.containers.get(container_id)
        except NotFound:
            return None
        return dict(container.attrs.get("State", {}))

    def list(self, labels: dict[str, str]) -> list[ContainerInfo]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        found = []
        for c in self.client.containers.list(all=True, filters=filters):
            found.append(ContainerInfo(id=c.id, name=c.name, status=c.status, labels=dict(c.labels)))
        return found

    def wait_for_output(self, container_id: str, marker: bytes, timeout: float) -> None:
        from docker.errors import NotFound

        try:
            container = self.client.containers.get(container_id)
        except NotFound as exc:
            raise DockerError(f"container {container_id[:12]} is gone") from exc
        wait_for_output(container, marker, timeout, what=f"container {container_id[:12]}")

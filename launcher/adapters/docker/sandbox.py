"""Where a run executes: one Docker container, created with launcher's labels and the
security profile on by default. Stop/remove are idempotent and never raise for a
container that is already gone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from launcher.adapters.docker.client import docker_client, image_id, wait_for_output
from launcher.adapters.docker.sidecars import DockerSidecars, join_networks, network_args, port_in_use
from launcher.adapters.faults import fault_point
from launcher.core import labels
from launcher.errors import DockerError, PortInUseError
from launcher.models import ContainerInfo, SandboxSpec

# How the engine keeps a run's output (whatever the daemon's default is, which may not be
# readable back at all): json-file is the driver that returns the bytes exactly (`local` was
# measured dropping the newline after a line longer than 16 KiB). Launcher reads the output as
# it is written (attached), so this copy is only its second chance after the container exited,
# and it is bounded: at most 2 x 32 MiB of JSON per container on the engine's disk.
# How long kill waits for the container to be dead (SIGKILL is not refused; the engine may lag).
KILL_WAIT_S = 30.0
LOG_CONFIG = {"type": "json-file", "config": {"max-size": "32m", "max-file": "2"}}
# The agent's processes get SIGTERM; PID 1 (the init) and its first child (the run's entry,
# which bundles the agent's commits once the agent is gone) do not. A SIGTERM to PID 1 would
# reach only the entry, whose shell dies of it, and then the init takes everything down with
# SIGKILL before the agent saw a thing. Run in the container as its own user, so it can reach
# nothing else. Plain POSIX sh and /proc: an agent image may have neither ps nor awk.
TERM_AGENT = r"""
entry= first=
for d in /proc/[0-9]*; do
    read -r s 2>/dev/null <"$d/stat" || continue
    set -- ${s##*) }
    [ "$2" = 1 ] || continue
    if [ -z "$first" ] || [ "${20}" -lt "$first" ]; then first=${20} entry=${d#/proc/}; fi
done
for d in /proc/[0-9]*; do
    p=${d#/proc/}
    read -r s 2>/dev/null <"$d/stat" || continue
    set -- ${s##*) }
    case $p in 1 | "$entry" | "$$") continue ;; esac
    case $2 in 0 | "$$") continue ;; esac
    kill -TERM "$p" 2>/dev/null
done
exit 0
"""


# Shared scratch folders: sticky and open to every uid, as on any Unix system.
SHARED_TMP = frozenset({"/tmp", "/var/tmp"})


def tmpfs_options(path: str, user: str) -> str:
    """Mount options of a writable scratch folder in a run (/tmp, $HOME).

    ``exec``: Docker mounts a tmpfs ``noexec`` by default, which breaks a venv in /tmp (its pip
    is a script there) and every tool that unpacks a binary into a cache. The root file system
    stays read-only and ``nosuid,nodev`` stay, so nothing run from here gains privileges. A
    folder other than /tmp ($HOME) belongs to the run's uid, so ``git config --global`` and the
    caches of pip and npm work; with a user given by name the owner cannot be known here and
    the folder is open to all (mode 1777), as /tmp is.
    """
    options = ["rw", "nosuid", "nodev", "exec", "size=512m"]
    uid, _, gid = user.partition(":")
    gid = gid or uid
    numeric = all(part.isascii() and part.isdigit() for part in (uid, gid))
    if path in SHARED_TMP or not numeric:
        return ",".join([*options, "mode=1777"])
    return ",".join([*options, f"uid={uid}", f"gid={gid}", "mode=0700"])


class DockerSandbox(DockerSidecars):
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
                **network_args(self.client, spec),
                image=spec.image,
                command=spec.command,
                entrypoint=spec.entrypoint,
                environment=spec.env,
                user=spec.user,
                working_dir=spec.workdir,
                labels=labels.checked(spec.labels),
                mounts=mounts,
                cap_drop=["ALL"],
                security_opt=["no-new-privileges"],
                read_only=True,
                tmpfs={path: tmpfs_options(path, spec.user) for path in spec.writable_tmp},
                pids_limit=spec.pids_limit,
                mem_limit=spec.memory,
                memswap_limit=spec.memory,
                nano_cpus=int(spec.cpus * 1e9),
                init=True,
                ipc_mode="private",
                runtime=spec.runtime,
                log_config=LOG_CONFIG,
                name=spec.name,
                detach=True,
            )
        except APIError as exc:
            raise DockerError(f"cannot create the run's container: {exc.explanation or exc}") from exc
        join_networks(self.client, str(container.id), spec.join)
        return str(container.id)

    def start(self, container_id: str) -> None:
        from docker.errors import APIError

        fault_point("sandbox.start")
        try:
            self.client.containers.get(container_id).start()
        except APIError as exc:
            text = str(exc.explanation or exc)
            taken = port_in_use(text)
            if taken is not None:
                raise PortInUseError(f"host port {taken} is already in use on this engine: {text}", port=taken) from exc
            raise DockerError(f"cannot start container {container_id[:12]}: {text}") from exc

    def attach(self, container_id: str) -> Iterator[bytes]:
        """The live output, from now on (``logs=0``: a replay of what came before was measured to
        drop lines of a running container)."""
        from docker.errors import APIError

        try:
            sock = self.client.api.attach_socket(container_id, params={"stdout": 1, "stderr": 1, "stream": 1})
        except APIError as exc:
            raise DockerError(f"cannot attach to container {container_id[:12]}: {exc.explanation or exc}") from exc
        return _frames(sock)

    def logs(self, container_id: str) -> Iterator[bytes]:
        from docker.errors import APIError

        try:
            container = self.client.containers.get(container_id)
            return iter(container.logs(stream=True, follow=False, stdout=True, stderr=True))
        except APIError as exc:
            raise DockerError(f"cannot read the output of {container_id[:12]}: {exc.explanation or exc}") from exc

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
        import requests
        from docker.errors import APIError, NotFound

        try:
            container = self.client.containers.get(container_id)
            container.kill()
        except NotFound:
            return
        except APIError as exc:
            if exc.status_code == 409:  # not running, which is what we wanted
                return
            raise DockerError(f"cannot kill container {container_id[:12]}: {exc.explanation or exc}") from exc
        # The engine answers once the signal is sent: dead before this returns, so that what
        # its processes wrote is final when the caller reads it (settle harvests next).
        try:
            container.wait(timeout=KILL_WAIT_S)
        except (NotFound, requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            return

    def stop(self, container_id: str, grace: float) -> None:
        from docker.errors import APIError, NotFound

        if grace > 0:
            try:
                self.client.containers.get(container_id).exec_run(["/bin/sh", "-c", TERM_AGENT])
            except NotFound:
                return
            except APIError:
                pass  # not running any more, or no room for one more process (pids limit): killed below
            try:
                if self.wait(container_id, grace) is not None:
                    return
            except NotFound:
                return
        self.kill(container_id)

    def exec_in(
        self, container_id: str, command: list[str], *, user: str, workdir: str, out: Callable[[int, bytes], None]
    ) -> int:
        from docker.errors import APIError, NotFound

        api = self.client.api
        try:
            # Not privileged, no extra capabilities: the process gets the container's own profile.
            created = api.exec_create(container_id, command, stdout=True, stderr=True, user=user, workdir=workdir)
            for stdout, stderr in api.exec_start(created["Id"], stream=True, demux=True):
                if stdout:
                    out(1, stdout)
                if stderr:
                    out(2, stderr)
            code = api.exec_inspect(created["Id"]).get("ExitCode")
        except NotFound as exc:
            raise DockerError(f"container {container_id[:12]} is gone: {exc.explanation or exc}") from exc
        except APIError as exc:
            raise DockerError(
                f"cannot run a command in container {container_id[:12]}: {exc.explanation or exc}"
            ) from exc
        # None: the engine lost track of it (the container ended under it).
        return int(code) if code is not None else 1

    def interactive(self, container_id: str, command: list[str], *, user: str, workdir: str) -> int:
        import shutil
        import subprocess

        # A terminal both ways (raw mode, resizes, ^C to the process inside) is what the docker CLI
        # does well; the SDK's exec socket would need all of it written again.
        docker = shutil.which("docker")
        if docker is None:
            raise DockerError(
                "an interactive shell needs the docker command-line client on this host",
                hint="install it (Debian: docker.io), or use `launcher exec RUN -- CMD…`",
            )
        argv = [docker, "exec", "--interactive", "--tty", "--user", user, "--workdir", workdir, container_id, *command]
        return subprocess.run(argv, check=False).returncode

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


def _frames(sock: Any) -> Iterator[bytes]:
    """The payloads of an attach stream's frames; a broken connection raises (it is not an end)."""
    from docker.utils.socket import frames_iter

    try:
        for _stream, data in frames_iter(sock, tty=False):
            yield data
    finally:
        sock.close()

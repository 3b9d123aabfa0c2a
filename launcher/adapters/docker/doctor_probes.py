"""What `launcher doctor` asks the engine: its facts, an image's build, a proxy that starts.

The proxy is started exactly as runs get it (launcher.adapters.docker.egress), under another
name, on a throwaway internal network of its own and with scratch folders of its own, so the
root's real proxy and its runs never see it; both are removed before the check returns. One
that a killed doctor left behind is removed by the next doctor of that root.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from launcher.adapters.docker import egress_proxy_sha256, install_egress_proxy
from launcher.adapters.docker.egress import DockerEgress, EgressFiles, ProxySettings
from launcher.adapters.docker.images import (
    IMAGE_REPO_PREFIX,
    content_hash,
    find_images_dir,
    launcher_bases,
)
from launcher.core import labels, uids
from launcher.core.doctor.ports import EngineFacts, ImageFacts
from launcher.core.netpolicy import check_allow_private
from launcher.errors import DockerError, InvalidInputError, LauncherError
from launcher.settings import NetworkSettings, RunDefaults

TRIAL_PREFIX = "launcher-egress-check-"
TRIAL_NETWORK_PREFIX = "launcher-check-"
SCRATCH = "doctor"
# A trial older than this is a leftover (a doctor takes seconds), whoever started it.
STALE_S = 600.0


def engine_facts(client: Any) -> EngineFacts:
    from docker.errors import APIError

    try:
        version = client.version()
        info = client.info()
    except APIError as exc:
        raise DockerError(f"the Docker engine answered with an error: {exc.explanation or exc}") from exc
    return EngineFacts(
        version=str(version.get("Version", "?")),
        api_version=str(version.get("ApiVersion", "?")),
        client_api_version=str(client.api.api_version),
        storage_driver=str(info.get("Driver", "?")),
        runtimes=sorted((info.get("Runtimes") or {}).keys()),
    )


def _find(client: Any, ref: str) -> str | None:
    from docker.errors import APIError, ImageNotFound

    try:
        return str(client.images.get(ref).id)
    except ImageNotFound:
        return None
    except APIError as exc:
        raise DockerError(f"cannot inspect image {ref!r}: {exc.explanation or exc}") from exc


def context_hash(images_dir: Path, name: str, _seen: tuple[str, ...] = ()) -> str:
    """The content hash `launcher image build NAME` tags its build with (no build args)."""
    if name in _seen:
        raise InvalidInputError(f"images {' -> '.join((*_seen, name))} are built FROM each other")
    folder = images_dir / name
    dockerfile = (folder / "Dockerfile").read_text(errors="replace")
    bases = {base: context_hash(images_dir, base, (*_seen, name)) for base in launcher_bases(dockerfile)}
    return content_hash(folder, base_hashes=bases)


def image_facts(client: Any, ref: str) -> ImageFacts:
    from docker.utils import parse_repository_tag

    found = _find(client, ref)
    repo, _tag = parse_repository_tag(ref)
    if not repo.startswith(IMAGE_REPO_PREFIX):
        return ImageFacts(ref=ref, image_id=found)
    name = repo.removeprefix(IMAGE_REPO_PREFIX)
    try:
        images_dir = find_images_dir(None)
    except LauncherError as exc:
        return ImageFacts(ref=ref, image_id=found, context_problem=f"no build context here to compare with ({exc})")
    if not (images_dir / name / "Dockerfile").is_file():
        return ImageFacts(ref=ref, image_id=found, context_problem=f"no build context {name!r} in {images_dir}")
    try:
        current = f"{repo}:{context_hash(images_dir, name)}"
    except (OSError, LauncherError) as exc:
        problem = f"cannot read its build context in {images_dir}: {exc}"
        return ImageFacts(ref=ref, image_id=found, context_name=name, context_problem=problem)
    return ImageFacts(
        ref=ref, image_id=found, context_name=name, current_tag=current, current_id=_find(client, current)
    )


class _TrialEgress(DockerEgress):
    """The root's proxy as runs get it, serving no run network."""

    def networks(self) -> list[Any]:
        return []

    def start(self) -> Any:
        return self._create_proxy()


def try_proxy(client: Any, root: Path, state_dir: Path, network: NetworkSettings, run: RunDefaults) -> str:
    """Start the proxy briefly; what it showed. DockerError (or OSError) when it did not start."""
    from docker.errors import APIError, NotFound

    try:
        client.networks.get(network.egress_network)
    except NotFound:
        raise DockerError(
            f"[network] egress_network {network.egress_network!r} is not a network of this engine",
            hint="create it (`docker network create NAME`), or name one that `docker network ls` lists",
        ) from None
    except APIError as exc:
        raise DockerError(f"cannot look at the egress network: {exc.explanation or exc}") from exc
    remove_stale_trials(client, root, state_dir)
    token = f"{secrets.token_hex(4)}-{labels.root_tag(root)}"
    scratch = state_dir / SCRATCH / f"proxy-{token}"
    net_name = f"{TRIAL_NETWORK_PREFIX}{token}"
    name = f"{TRIAL_PREFIX}{token}"
    proxy_ids = uids.proxy_ids(run)
    private = [str(n) for n in check_allow_private(network.allow_private, subnet_pool=network.subnet_pool)]
    made_state_dir = not state_dir.exists()
    try:
        # The engine mounts these from the host: under the case root, as the real proxy's are.
        program = install_egress_proxy(scratch)
        policies, logs = scratch / "policies", scratch / "logs"
        EgressFiles(policies, logs, proxy_ids).prepare()
        try:
            client.networks.create(net_name, driver="bridge", internal=True, labels={labels.ROOT: str(root)})
        except APIError as exc:
            raise DockerError(f"cannot create a throwaway network for the proxy: {exc.explanation or exc}") from exc
        settings = ProxySettings.of(
            network,
            root=root,
            name=name,
            egress_network=net_name,
            ids=proxy_ids,
            program=program,
            program_sha256=egress_proxy_sha256(program),
            policies=policies,
            logs=logs,
            private_allowed=private,
        )
        started = time.monotonic()
        _TrialEgress(settings, scratch / "lock", lambda: client).start()
        took = time.monotonic() - started
    finally:
        _remove_container(client, name)
        _remove_network(client, net_name)
        shutil.rmtree(scratch, ignore_errors=True)
        # A look leaves no folder behind: only the ones it made, and only when empty.
        for folder in (scratch.parent, *([state_dir] if made_state_dir else [])):
            with contextlib.suppress(OSError):
                folder.rmdir()
    return (
        f"{network.proxy_image} listened after {took:.1f} s as uid {proxy_ids[0]} (read-only, capabilities "
        f"dropped; egress network {network.egress_network!r} present); removed with its throwaway network"
    )


def remove_stale_trials(client: Any, root: Path, state_dir: Path) -> None:
    """Trial proxies and networks of this root that a killed doctor left, and their folders."""
    from docker.errors import APIError

    now = datetime.now(UTC)
    with contextlib.suppress(APIError):
        for container in client.containers.list(all=True, filters={"label": f"{labels.ROOT}={root}"}):
            if container.name.startswith(TRIAL_PREFIX) and _age(container.attrs.get("Created"), now) > STALE_S:
                _remove_container(client, container.name)
        for net in client.networks.list(filters={"label": f"{labels.ROOT}={root}"}):
            if net.name.startswith(TRIAL_NETWORK_PREFIX) and _age(net.attrs.get("Created"), now) > STALE_S:
                _remove_network(client, net.name)
    folder = state_dir / SCRATCH
    if folder.is_dir():
        for entry in folder.iterdir():
            with contextlib.suppress(OSError):
                if time.time() - entry.lstat().st_mtime > STALE_S and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)


def _age(created: object, now: datetime) -> float:
    """Seconds since the engine's ``Created`` (RFC 3339, nanoseconds); 0 when it cannot be read."""
    if not isinstance(created, str):
        return 0.0
    try:
        when = datetime.fromisoformat(created)
    except ValueError:
        return 0.0
    return (now - (when if when.tzinfo else when.replace(tzinfo=UTC))).total_seconds()


def _remove_container(client: Any, name: str) -> None:
    from docker.errors import APIError, NotFound

    with contextlib.suppress(NotFound, APIError):
        client.containers.get(name).remove(force=True)


def _remove_network(client: Any, name: str) -> None:
    from docker.errors import APIError, NotFound

    with contextlib.suppress(NotFound, APIError):
        client.networks.get(name).remove()

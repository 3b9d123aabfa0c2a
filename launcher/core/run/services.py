"""A run's sidecars: its services (a database, a cache) and the relay that publishes its ports.

Services start on the run's own network before the agent, each at a fixed address the agent
resolves by name (its /etc/hosts: a run's resolver answers nothing), with a run's security
profile (read-only root, every capability dropped, no-new-privileges, limits; never root: the
image's own user when it has one, else the run's uid), and the agent starts only once every one
is healthy. A service that is not healthy in time ends the run before the agent starts, as the
service's failure (``ServiceFailedError``, exit 20), and leaves nothing behind.

A run's network is internal and holds no host address, so the engine cannot publish anything on
it; a relay container publishes the run's ports on 127.0.0.1 only and connects only to the
run's own listeners (launcher.adapters.docker.port_relay). Services get no network but the
run's: they reach what the run's policy lets it reach (through the proxy), nothing else.

Everything is recorded on the run before it is made (names, leased ports), so a launcher killed
anywhere leaves what its settle, or gc (by label and by lease), removes.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from launcher.core import labels
from launcher.core.egress import RunNetwork
from launcher.core.portleases import (
    MAX_PORT_ATTEMPTS,
    SERVICE_NAME,
    PortLease,
    PortLeaser,
    PortRange,
    PortWish,
    port_env,
)
from launcher.core.ports.sidecars import SidecarPort
from launcher.core.run.deps import RunDeps
from launcher.core.runlayout import RunPaths
from launcher.errors import CapacityError, InvalidInputError, LauncherError, PortInUseError, ServiceFailedError
from launcher.models import RunRecord, SandboxSpec
from launcher.models.details import PortDetails, ServiceDetails, ServiceFailureDetails
from launcher.settings import ServiceSettings

# Fixed addresses in a run's /28: .1 the (unassigned) gateway, .2 the egress proxy, then these.
AGENT_HOST = 3
RELAY_HOST = 4
FIRST_SERVICE_HOST = 5
MAX_SERVICES = 8  # .5 to .12; the rest of the /28 stays free
RELAY_FIRST_LISTEN = 10000
RELAY_READY = b"launcher-relay: listening"
RELAY_READY_TIMEOUT_S = 30.0
HEALTH_POLL_S = 0.25
SERVICE_LOG_MAX = 16 * 1024 * 1024
ROOT_USERS = frozenset({"", "root", "0", "0:0", "root:root"})


@dataclass(frozen=True)
class Sidecars:
    """What the agent's container gets from its sidecars: its fixed address, names, port variables."""

    agent_ip: str
    hosts: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


def sidecars_of(deps: RunDeps) -> SidecarPort | None:
    return deps.sidecars


def select_services(
    defined: Mapping[str, ServiceSettings], asked: list[str], profile: list[str]
) -> dict[str, ServiceSettings]:
    """Every ``auto`` service of [run.services], and those named by --service and the profile."""
    for name in [*asked, *profile]:
        if name not in defined:
            known = ", ".join(sorted(defined)) or "none"
            raise InvalidInputError(
                f"--service {name}: no [run.services.{name}] in launcher.toml (defined: {known})",
                hint="define it: [run.services.NAME] with image, env, command, healthcheck, tmpfs",
            )
    chosen = {name: spec for name, spec in defined.items() if spec.auto or name in asked or name in profile}
    for name, spec in chosen.items():
        if not SERVICE_NAME.match(name):
            raise InvalidInputError(f"[run.services.{name}]: a service name is lowercase letters, digits and -")
        if spec.user is not None and spec.user.strip() in ROOT_USERS:
            raise InvalidInputError(f"[run.services.{name}] user = {spec.user!r}: services never run as root")
    if len(chosen) > MAX_SERVICES:
        raise InvalidInputError(f"{len(chosen)} services for one run; at most {MAX_SERVICES}")
    return chosen


def check_sidecars(
    deps: RunDeps, ports: tuple[PortWish, ...], services: Mapping[str, ServiceSettings], mode: str
) -> None:
    """Refuse, before anything is made, what a run's ports and services cannot get."""
    if not ports and not services:
        return
    if mode == "none":
        raise InvalidInputError(
            "--port and services need the run's own network; --network none has only lo",
            hint="use --network allowlist with no hosts: the run then reaches nothing but its services",
        )
    sidecars = sidecars_of(deps)
    if sidecars is None or deps.egress is None:
        raise InvalidInputError("this launcher's sandbox cannot run services or publish ports")
    for wish in ports:
        if wish.service is not None and wish.service not in services:
            raise InvalidInputError(f"--port {wish.describe()}: the run has no service {wish.service!r}")
    PortRange.parse(deps.network.port_range)
    if ports:
        sidecars.image_id(deps.network.proxy_image)  # the relay's image
    for name, spec in services.items():
        try:
            sidecars.image_id(spec.image)
        except LauncherError as exc:
            raise InvalidInputError(f"service {name}: {exc.message}", hint=exc.hint) from exc


def _host(network: RunNetwork, number: int) -> str:
    return str(ipaddress.IPv4Network(network.subnet.cidr)[number])


def _name(deps: RunDeps, holder: str) -> str:
    return f"launcher-{holder}-{labels.root_tag(deps.root)}"


def open_sidecars(
    deps: RunDeps,
    run: RunRecord,
    ports: tuple[PortWish, ...],
    services: Mapping[str, ServiceSettings],
    *,
    runtime: str | None,
    uid: int,
    gid: int,
    network: RunNetwork | None,
) -> Sidecars | None:
    """Start the run's services (healthy, or ServiceFailedError) and publish its ports; None: it has neither."""
    if not ports and not services:
        return None
    sidecars = sidecars_of(deps)
    if sidecars is None or network is None:
        raise InvalidInputError("services and ports need the run's own network and a Docker sandbox")
    hosts = start_services(deps, sidecars, run, services, runtime=runtime, uid=uid, gid=gid, network=network)
    agent_ip = _host(network, AGENT_HOST)
    leases = publish_ports(deps, sidecars, run, ports, hosts, uid=uid, gid=gid, network=network, agent_ip=agent_ip)
    return Sidecars(agent_ip=agent_ip, hosts=hosts, env=port_env(leases))


def _service_user(sidecars: SidecarPort, spec: ServiceSettings, ids: tuple[int, int], labels: dict[str, str]) -> str:
    if spec.user is not None:
        return spec.user.strip()
    own = sidecars.image_user(spec.image, labels).strip()
    return f"{ids[0]}:{ids[1]}" if own in ROOT_USERS or own.split(":")[0] in ROOT_USERS else own


def start_services(
    deps: RunDeps,
    sidecars: SidecarPort,
    run: RunRecord,
    services: Mapping[str, ServiceSettings],
    *,
    runtime: str | None,
    uid: int,
    gid: int,
    network: RunNetwork,
) -> dict[str, str]:
    """Create and start every service, then wait until each is healthy; name -> address."""
    if not services:
        return {}
    d = deps.defaults
    records = [
        ServiceDetails(
            name=name,
            image=spec.image,
            container=_name(deps, f"{run.id}-svc-{name}"),
            ip=_host(network, FIRST_SERVICE_HOST + index),
            state="starting",
            log=str(deps.paths(run).record / "services" / f"{name}.log"),
        )
        for index, (name, spec) in enumerate(services.items())
    ]
    deps.store.update_run(run.id, details={"services": [r.model_dump(mode="json") for r in records]})
    started: dict[str, str] = {}
    owned = labels.for_run(deps.root, run.id, run.task_id, kind="service")
    for record, (name, spec) in zip(records, services.items(), strict=True):
        assert record.container is not None
        assert record.ip is not None
        container_id = sidecars.create(
            SandboxSpec(
                image=spec.image,
                name=record.container,
                command=list(spec.command),
                entrypoint=None,
                env=dict(spec.env),
                user=_service_user(sidecars, spec, (uid, gid), owned),
                workdir=None,
                labels=owned,
                mounts=[],
                writable_tmp=sorted({"/tmp", *spec.tmpfs}),
                network=network.name,
                ip=record.ip,
                memory=d.memory,
                cpus=d.cpus,
                pids_limit=d.pids_limit,
                runtime=runtime,
                healthcheck=list(spec.healthcheck) or None,
            )
        )
        sidecars.start(container_id)
        started[name] = container_id
    deps.checkpoint("after:services")
    _wait_healthy(deps, sidecars, run, services, started, records)
    healthy = [r.model_copy(update={"state": "healthy"}) for r in records]
    deps.store.update_run(run.id, details={"services": [r.model_dump(mode="json") for r in healthy]})
    return {r.name: r.ip for r in records if r.name is not None and r.ip is not None}


def _wait_healthy(
    deps: RunDeps,
    sidecars: SidecarPort,
    run: RunRecord,
    services: Mapping[str, ServiceSettings],
    started: dict[str, str],
    records: list[ServiceDetails],
) -> None:
    """Poll every service's health on its own deadline; the first that fails ends the wait."""
    begun = time.monotonic()
    pending = dict(started)
    looks = 0
    while pending:
        looks += 1
        for name, container_id in list(pending.items()):
            state = sidecars.health(container_id)
            if state in ("healthy", "running"):
                del pending[name]
                continue
            waited = time.monotonic() - begun
            timeout = services[name].health_timeout
            if state == "starting" and waited < timeout:
                continue
            if state == "exited":
                why = f"exited with status {sidecars.exit_status(container_id)} before it was healthy"
            elif state == "gone":
                why = "its container disappeared before it was healthy"
            elif state == "unhealthy":
                why = f"its health check failed (after {waited:.1f}s)"
            else:
                why = f"not healthy after {timeout:g}s ({looks} looks; last state {state})"
            _fail(deps, run, name, why, records)
        if pending:
            time.sleep(HEALTH_POLL_S)  # the engine's health state changes on its own clock


def _fail(deps: RunDeps, run: RunRecord, name: str, why: str, records: list[ServiceDetails]) -> None:
    log = next((r.log for r in records if r.name == name), None)
    failure = ServiceFailureDetails(name=name, reason=why, log=log)
    failed = [r.model_copy(update={"state": "failed"}) if r.name == name else r for r in records]
    deps.store.update_run(
        run.id,
        details={
            "service_failure": failure.model_dump(mode="json"),
            "services": [r.model_dump(mode="json") for r in failed],
        },
    )
    raise ServiceFailedError(
        f"service {name} did not become healthy: {why}; the agent did not start (its log: {log})",
        service=name,
        log=log,
    )


def publish_ports(
    deps: RunDeps,
    sidecars: SidecarPort,
    run: RunRecord,
    wishes: tuple[PortWish, ...],
    hosts: dict[str, str],
    *,
    uid: int,
    gid: int,
    network: RunNetwork,
    agent_ip: str,
) -> list[PortLease]:
    """Lease a host port per name and start the relay that publishes them on 127.0.0.1.

    A port the engine refuses (another case root's run, or anything else, took it since the
    lease's bind check) is leased anew, skipping it, a bounded number of times.
    """
    if not wishes:
        return []
    leaser = PortLeaser(deps.store, PortRange.parse(deps.network.port_range), sidecars.port_free)
    leases = leaser.lease_all(run.id, wishes)
    relay = _name(deps, f"{run.id}-ports")
    deps.store.update_run(run.id, details={"port_relay": relay, "ports": _port_records(leases)})
    skipped: dict[str, set[int]] = {}
    for _ in range(MAX_PORT_ATTEMPTS):
        spec = _relay_spec(deps, sidecars, run, relay, leases, hosts, (uid, gid), network, agent_ip)
        container_id = sidecars.create(spec)
        try:
            sidecars.start(container_id)
        except PortInUseError as exc:
            sidecars.remove(container_id)
            taken = next((lease for lease in leases if lease.host_port == exc.port), None)
            if taken is None:
                raise
            skipped.setdefault(taken.name, set()).add(exc.port)
            port = leaser.lease(run.id, taken.name, skip=skipped[taken.name])
            wanted = {wish.name: wish for wish in wishes}[taken.name]
            renewed = taken.model_copy(update={"host_port": port, "container_port": wanted.container_port or port})
            leases = [renewed if lease.name == taken.name else lease for lease in leases]
            deps.store.update_run(run.id, details={"ports": _port_records(leases)})
            continue
        sidecars.wait_for_output(container_id, RELAY_READY, RELAY_READY_TIMEOUT_S)
        deps.checkpoint("after:ports")
        return leases
    raise CapacityError(f"the engine refused {MAX_PORT_ATTEMPTS} host ports in a row for run {run.id}")


def _port_records(leases: list[PortLease]) -> list[dict[str, object]]:
    return [
        PortDetails(
            name=lease.name,
            host_port=lease.host_port,
            container_port=lease.container_port,
            url=lease.url,
            **({"service": lease.service} if lease.service else {}),
        ).model_dump(mode="json")
        for lease in leases
    ]


def _relay_spec(
    deps: RunDeps,
    sidecars: SidecarPort,
    run: RunRecord,
    name: str,
    leases: list[PortLease],
    hosts: dict[str, str],
    ids: tuple[int, int],
    network: RunNetwork,
    agent_ip: str,
) -> SandboxSpec:
    listeners = {
        RELAY_FIRST_LISTEN + index: (hosts[lease.service] if lease.service else agent_ip, lease.container_port)
        for index, lease in enumerate(leases)
    }
    entrypoint, command = sidecars.relay_command(listeners)
    return SandboxSpec(
        image=deps.network.proxy_image,
        name=name,
        command=command,
        entrypoint=entrypoint,
        env={},
        user=f"{ids[0]}:{ids[1]}",
        workdir="/",
        labels=labels.for_run(deps.root, run.id, run.task_id, kind="port-relay"),
        mounts=[],
        writable_tmp=[],
        # Created on the publishing network (the engine publishes there), joined to the run's.
        network=deps.network.egress_network,
        published={listen: lease.host_port for listen, lease in zip(listeners, leases, strict=True)},
        join={network.name: _host(network, RELAY_HOST)},
        memory="64m",
        cpus=0.5,
        pids_limit=256,
    )


def close_sidecars(deps: RunDeps, run: RunRecord, paths: RunPaths, problems: list[str]) -> None:
    """Keep each service's log with the run's, remove the services and the relay, release the ports."""
    details = run.details
    if not (details.services or details.port_relay or details.ports):
        return
    sidecars = sidecars_of(deps)
    if sidecars is not None:
        for service in details.services or []:
            if not service.container:
                continue
            try:
                if service.log and service.name:
                    sidecars.save_logs(
                        service.container, paths.record / "services" / f"{service.name}.log", SERVICE_LOG_MAX
                    )
                sidecars.remove_named(service.container)
            except (LauncherError, OSError) as exc:
                problems.append(f"service {service.name}: {exc}")
        if details.port_relay:
            try:
                sidecars.remove_named(details.port_relay)
            except LauncherError as exc:
                problems.append(f"port relay: {exc}")
    # After the relay is gone: the engine has let go of the ports by then.
    try:
        deps.store.release_ports(run.id)
    except LauncherError as exc:
        problems.append(f"port release: {exc}")

"""A run's way out: its subnet lease, its network, its policy at the proxy, and the cleanup.

Every step is recorded on the run before the next begins (network name and subnet first), so
a launcher killed anywhere leaves something `gc` can find by record and by label.

Spare networks ([network] spare_networks = N): a run's network is made recyclable (labelled
``spare-network``, no run ID) and, when the run is done with it, kept for the next run instead
of removed: its policy is gone (the proxy refuses everything from it), no container but the
proxy is on it, and its subnet lease passes to ``spare:NAME``. A run takes one by moving that
lease to itself (a compare-and-set: two runs never take the same one), writes its own policy and
makes sure the proxy is on it: no network create, no proxy connect, and at the end no
disconnect and no network removal on the run's path. gc removes spares that wait, taking their
lease the same way first, so a run and gc never both have one.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from launcher.core import labels
from launcher.core.netpolicy import EgressPolicy, EgressSummary, policy_document, summarise_decisions
from launcher.core.ports import Coordinator, EgressFilesPort, EgressNetworkPort
from launcher.core.subnets import RunSubnet, SubnetPool
from launcher.errors import CapacityError, LauncherError, SubnetInUseError
from launcher.models import RunRecord

# How many slots a run tries when other networks on the engine (another launcher root, another
# tool) already hold them; each refusal costs one failed `network create`.
MAX_SUBNET_ATTEMPTS = 64
SPARE_HOLDER_PREFIX = "spare:"
GC_HOLDER_PREFIX = "gc:"  # a spare's lease while gc removes it
SPARE_NAME_PREFIX = "launcher-spare-"


@dataclass(frozen=True)
class RunNetwork:
    name: str
    subnet: RunSubnet


class RunEgress:
    def __init__(
        self,
        store: Coordinator,
        networks: EgressNetworkPort,
        files: EgressFilesPort,
        pool: SubnetPool,
        *,
        root: Path,
        root_tag: str,
        spares: int = 0,
    ) -> None:
        self.store, self.networks, self.files, self.pool = store, networks, files, pool
        self.root, self.root_tag = root, root_tag
        self.spares = spares

    def network_name(self, run_id: str) -> str:
        return f"launcher-{run_id}-{self.root_tag}"

    def check(self) -> None:
        """Refuse before anything is created when the proxy cannot run."""
        self.networks.check_image()

    def open(self, run: RunRecord, policy: EgressPolicy, key_values: dict[str, str]) -> RunNetwork:
        def record(subnet: RunSubnet) -> None:
            self.store.update_run(run.id, details={"egress": _egress_record(name, subnet)})

        spare = self._take_spare(run) if self.spares else None
        if spare is not None:
            name, subnet = spare.name, spare.subnet
            record(subnet)
        elif self.spares:
            # Made so that it can be kept for the next run: a spare's name and labels, no run ID.
            name = f"{SPARE_NAME_PREFIX}{secrets.token_hex(4)}-{self.root_tag}"
            subnet = self._make_network(run.id, name, self._spare_labels, record)
        else:
            name = self.network_name(run.id)
            subnet = self._make_network(run.id, name, lambda subnet: self._labels(run, subnet), record)
        self.files.prepare()
        self.files.write_policy(
            run.id, policy_document(policy, run.id, subnet.cidr, key_values, self.files.log_name(run.id))
        )
        self.networks.attach_proxy(name, subnet.proxy_ip)
        return RunNetwork(name=name, subnet=subnet)

    def _make_network(
        self,
        holder: str,
        name: str,
        labels: Callable[[RunSubnet], dict[str, str]],
        record: Callable[[RunSubnet], None],
    ) -> RunSubnet:
        skip: list[int] = []
        for _ in range(MAX_SUBNET_ATTEMPTS):
            subnet = self.pool.subnet(self.store.lease_subnet(holder, self.pool.slots, skip))
            record(subnet)
            try:
                self.networks.create_network(name, subnet, labels(subnet))
                return subnet
            except SubnetInUseError:
                skip.append(subnet.slot)
        raise CapacityError(
            f"no free subnet for network {name} after {MAX_SUBNET_ATTEMPTS} tries in {self.pool.network}",
            hint="other networks on this engine overlap [network].subnet_pool; choose another range",
        )

    # -- warm pool slots: the network is made ahead of time, the policy when a run takes it --

    def open_slot(self, slot_id: str) -> RunNetwork:
        """A warm slot's network; the proxy refuses everything on it until a run's policy is written."""
        name = self.network_name(slot_id)

        def slot_labels(subnet: RunSubnet) -> dict[str, str]:
            slot = labels.for_root(self.root, "pool-network", **{labels.POOL_SLOT: slot_id})
            return {**slot, **_subnet_labels(subnet)}

        subnet = self._make_network(pool_holder(slot_id), name, slot_labels, lambda _subnet: None)
        self.files.prepare()  # the proxy mounts the policy folder
        self.networks.attach_proxy(name, subnet.proxy_ip)
        return RunNetwork(name=name, subnet=subnet)

    def slot_network(self, slot_id: str, subnet_slot: int) -> RunNetwork:
        return RunNetwork(name=self.network_name(slot_id), subnet=self.pool.subnet(subnet_slot))

    def adopt_slot(
        self, run: RunRecord, slot_id: str, network: RunNetwork, policy: EgressPolicy, key_values: dict[str, str]
    ) -> None:
        """The run takes over a slot's network: its lease, its record, and the run's policy at the proxy."""
        if not self.store.transfer_subnet(pool_holder(slot_id), run.id):
            raise CapacityError(f"pool slot {slot_id} holds no subnet lease any more (collected by gc?)")
        subnet = network.subnet
        self.store.update_run(run.id, details={"egress": _egress_record(network.name, subnet)})
        self.files.prepare()
        self.files.write_policy(
            run.id, policy_document(policy, run.id, subnet.cidr, key_values, self.files.log_name(run.id))
        )
        # The proxy the slot was warmed with may have exited for want of runs meanwhile.
        self.networks.attach_proxy(network.name, subnet.proxy_ip)

    def close_slot(self, slot_id: str, problems: list[str]) -> None:
        """Tear down a slot's network that no run took."""
        steps: list[tuple[str, Callable[[], object]]] = [
            ("network removal", lambda: self.networks.remove_network(self.network_name(slot_id))),
            ("subnet release", lambda: self.store.release_subnet(pool_holder(slot_id))),
        ]
        _each(steps, problems)

    def capture(self, run: RunRecord, decision_log: Path, problems: list[str]) -> EgressSummary | None:
        """What the run's record needs of its network, once its container and services are gone:
        its policy removed (from then on the proxy refuses everything from its subnet) and its
        decision log taken and summarised. The network itself goes in ``release``."""
        if run.details.egress is None:
            return None
        log = str(decision_log)
        summary: list[EgressSummary] = []
        steps: list[tuple[str, Callable[[], object]]] = [
            ("policy removal", lambda: self.files.remove_policy(run.id)),
            # The log moves whole; the record keeps only its summary (counts, the top hosts).
            (
                "decision log",
                lambda: summary.append(summarise_decisions(self.files.take_log(run.id, decision_log), log)),
            ),
        ]
        _each(steps, problems)
        found = summary[0] if summary else summarise_decisions([], log)
        return found.model_copy(update={"log": log if decision_log.exists() else None})

    def release(self, run: RunRecord, problems: list[str]) -> None:
        """The run's network (after ``capture``): kept as a spare, or removed (which disconnects
        the proxy) and its subnet released. Each step even when another failed."""
        recorded = run.details.egress
        if recorded is None:
            return
        name = recorded.network or self.network_name(run.id)
        steps: list[tuple[str, Callable[[], object]]]
        if name.startswith(SPARE_NAME_PREFIX):
            steps = [("spare network", lambda: self._keep_or_remove(run.id, name))]
        else:
            steps = [
                ("network removal", lambda: self.networks.remove_network(name)),
                # Only once the network is gone: a next run never meets its subnet in use.
                ("subnet release", lambda: self.store.release_subnet(run.id)),
            ]
        _each(steps, problems)

    # -- spare networks ---------------------------------------------------------------------

    def _take_spare(self, run: RunRecord) -> RunNetwork | None:
        """A waiting spare network, its lease now the run's; None when none waits."""
        waiting = {
            holder[len(SPARE_HOLDER_PREFIX) :]: slot
            for slot, holder in self.store.subnet_leases().items()
            if holder.startswith(SPARE_HOLDER_PREFIX)
        }
        if not waiting:
            return None
        for network in self.networks.networks():
            slot = waiting.get(network.name)
            if slot is None or network.labels.get(labels.KIND) != "spare-network":
                continue
            if not self.store.transfer_subnet(spare_holder(network.name), run.id):
                continue  # another run (or gc) took it first
            if self.networks.members(network.name) is None:
                # Removed behind launcher's back (`docker network prune`): let go of it, make one.
                self.store.release_subnet(run.id)
                continue
            return RunNetwork(name=network.name, subnet=self.pool.subnet(slot))
        return None

    def _keep_or_remove(self, run_id: str, name: str) -> None:
        """Keep the run's network as a spare when fewer than [network] spare_networks wait and
        nothing but the proxy is on it; else remove it and release its subnet."""
        waiting = sum(1 for h in self.store.subnet_leases().values() if h.startswith(SPARE_HOLDER_PREFIX))
        members = self.networks.members(name)
        if (
            waiting < self.spares
            and members is not None
            and set(members) <= {self.networks.proxy_name}
            and self.store.transfer_subnet(run_id, spare_holder(name))
        ):
            return
        try:
            self.networks.remove_network(name)
        finally:
            self.store.release_subnet(run_id)

    def _spare_labels(self, subnet: RunSubnet) -> dict[str, str]:
        return {**labels.for_root(self.root, "spare-network"), **_subnet_labels(subnet)}

    def _labels(self, run: RunRecord, subnet: RunSubnet) -> dict[str, str]:
        return {**labels.for_run(self.root, run.id, run.task_id, kind="run-network"), **_subnet_labels(subnet)}


def _each(steps: list[tuple[str, Callable[[], object]]], problems: list[str]) -> None:
    for what, step in steps:
        try:
            step()
        except (LauncherError, OSError) as exc:
            problems.append(f"egress {what}: {exc}")


def _subnet_labels(subnet: RunSubnet) -> dict[str, str]:
    return {labels.SUBNET: subnet.cidr, labels.PROXY_IP: subnet.proxy_ip}


def _egress_record(name: str, subnet: RunSubnet) -> dict[str, str]:
    return {"network": name, "subnet": subnet.cidr, "proxy_ip": subnet.proxy_ip}


POOL_HOLDER_PREFIX = "pool:"


def spare_holder(network: str) -> str:
    """Who holds a spare network's subnet lease while it waits for a run."""
    return SPARE_HOLDER_PREFIX + network


def pool_holder(slot_id: str) -> str:
    """Who holds a warm slot's subnet lease until a run takes the slot."""
    return POOL_HOLDER_PREFIX + slot_id

"""Per-run networks, the proxy that is their only way out, and its files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from launcher.core.subnets import RunSubnet
from launcher.models import NetworkInfo


class EgressNetworkPort(Protocol):
    """Per-run networks and the proxy that is their only way out."""

    def check_image(self) -> None: ...

    def create_network(self, name: str, subnet: RunSubnet, labels: dict[str, str]) -> None:
        """Raises SubnetInUseError when something else on the engine holds the subnet."""

    def remove_network(self, name: str) -> None: ...

    def networks(self) -> list[NetworkInfo]: ...

    def attach_proxy(self, network: str, ip: str) -> None: ...

    def members(self, network: str) -> list[str] | None:
        """Names of the containers on ``network``; None when there is no such network."""
        ...

    @property
    def proxy_name(self) -> str: ...

    def remove_proxy_if_idle(self) -> bool: ...


class EgressFilesPort(Protocol):
    """Policy files the proxy reads and decision logs it writes."""

    def prepare(self) -> None: ...

    def write_policy(self, run_id: str, document: dict[str, Any]) -> None: ...

    def remove_policy(self, run_id: str) -> None: ...

    def policy_runs(self) -> list[str]: ...

    def log_name(self, run_id: str) -> str: ...

    def live_log(self, run_id: str) -> Path:
        """Where the proxy appends the run's decisions while it lives."""
        ...

    def take_log(self, run_id: str, dest: Path) -> Iterator[dict[str, Any]]:
        """Move the run's whole decision log to ``dest``; its decisions, read one by one."""
        ...

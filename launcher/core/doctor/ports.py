"""What `launcher doctor` asks of the machine: the engine, host git, DNS, disks, the state store.

Each method answers with facts or raises (a LauncherError with a hint, or OSError); the rules in
launcher.core.doctor.checks decide what the facts mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from launcher.core.ports.sandbox import Sandbox
from launcher.settings import NetworkSettings, RunDefaults


class EngineFacts(BaseModel):
    model_config = ConfigDict(frozen=True)

    version: str
    api_version: str
    client_api_version: str
    storage_driver: str
    runtimes: list[str]


class ImageFacts(BaseModel):
    """A configured image: its ID if present, and what "current" means for it."""

    model_config = ConfigDict(frozen=True)

    ref: str
    image_id: str | None
    # Built from launcher's own build contexts (launcher/NAME): the folder's name.
    context_name: str | None = None
    # The tag of the build context's content hash, when the context is available here.
    current_tag: str | None = None
    current_id: str | None = None
    # Why the context could not be looked at (none installed, an unreadable folder).
    context_problem: str | None = None


class StoreFacts(BaseModel):
    """The coordinator as a read-only look found it (nothing created, nothing migrated)."""

    model_config = ConfigDict(frozen=True)

    where: str  # the URL without credentials, or the SQLite file
    exists: bool  # False: no SQLite file yet (a run or `launcher init` makes it)
    schema_version: int | None  # None: no schema yet (a new PostgreSQL database)
    known_version: int  # the schema this launcher writes


class DoctorHost(Protocol):
    # -- the engine (each raises DockerError / DockerUnavailableError) -----------------------
    def engine(self) -> EngineFacts: ...

    def image(self, ref: str) -> ImageFacts: ...

    def sandbox(self) -> Sandbox:
        """Containers on the run's security profile (the adapter adds it)."""
        ...

    def try_proxy(self, root: Path, state_dir: Path, network: NetworkSettings, run: RunDefaults) -> str:
        """Start an egress proxy as runs get it, on a throwaway internal network, labelled, and
        remove both; what it showed, or a LauncherError saying why it did not start."""
        ...

    # -- the host ----------------------------------------------------------------------------
    def git_version(self) -> str:
        """`git --version` of the host's git (raises GitError when there is none)."""
        ...

    def resolve(self, host: str) -> list[str]:
        """The addresses ``host`` resolves to here (OSError when it does not)."""
        ...

    def host_addresses(self, private_allowed: list[str]) -> list[str]:
        """This machine's addresses the proxy refuses, as the proxy is told them."""
        ...

    def public_cidrs(self) -> list[str]:
        """Ranges the proxy is told to treat as public (test only; empty in use)."""
        ...

    def free_space(self, path: Path) -> int: ...

    def disk_size(self, path: Path) -> int: ...

    def probe_write(self, folder: Path) -> None:
        """Create, write, sync and remove a file in ``folder`` (OSError when it cannot)."""
        ...

    def store(self, url: str) -> StoreFacts:
        """A read-only look at the coordinator (StateStoreError when it cannot be reached)."""
        ...

    def open_store(self, url: str) -> None:
        """Open the coordinator as a run does (its write lock included) and close it again."""
        ...

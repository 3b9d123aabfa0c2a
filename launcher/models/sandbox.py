"""What a container and a network are made from, and what the engine says about them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class MountSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    target: str
    source: str | None = None
    kind: Literal["bind", "tmpfs"] = "bind"
    read_only: bool = False
    tmpfs_size: int | None = None
    tmpfs_mode: int | None = None


class SandboxSpec(BaseModel):
    """Everything needed to create a run's container; the adapter adds the security profile."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    image: str
    name: str
    command: list[str]
    entrypoint: list[str] | None  # None: the image's own (a service's)
    env: dict[str, str]
    user: str
    workdir: str | None  # None: the image's own (a service's)
    labels: dict[str, str]
    mounts: list[MountSpec]
    writable_tmp: list[str]
    network: str
    memory: str
    cpus: float
    pids_limit: int
    runtime: str | None = None
    # Its fixed address on ``network`` (a run with services or ports: the relay and the services
    # find the agent there); None: the engine picks one.
    ip: str | None = None
    # Names the container resolves through /etc/hosts (a run's services: its resolver answers nothing).
    extra_hosts: dict[str, str] = Field(default_factory=dict)
    # A command that exits 0 once the container is ready (a service's); None: the image's HEALTHCHECK.
    healthcheck: list[str] | None = None
    # Container port -> host port, published on 127.0.0.1 only (the port relay's).
    published: dict[int, int] = Field(default_factory=dict)
    # Further networks it joins before it starts, each with its fixed address (the port relay: the run's).
    join: dict[str, str] = Field(default_factory=dict)


class ContainerInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    status: str
    labels: dict[str, str]


class NetworkInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    labels: dict[str, str]

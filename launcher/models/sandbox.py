"""What a container and a network are made from, and what the engine says about them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


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
    entrypoint: list[str]
    env: dict[str, str]
    user: str
    workdir: str
    labels: dict[str, str]
    mounts: list[MountSpec]
    writable_tmp: list[str]
    network: str
    memory: str
    cpus: float
    pids_limit: int
    runtime: str | None = None


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

"""Ports: the interfaces core services need, implemented by the adapters.

One module per kind of backend; the core never sees which implementation it talks to.
"""

from launcher.core.ports.coordinator import Coordinator, QueueStore, RunStore, SubnetStore, TaskStore
from launcher.core.ports.egress import EgressFilesPort, EgressNetworkPort
from launcher.core.ports.marks import FolderMarksPort, NoMarks
from launcher.core.ports.pool import PoolSlotsPort
from launcher.core.ports.repo import RepoPort, WorkspacePort
from launcher.core.ports.sandbox import Sandbox
from launcher.core.ports.taskfiles import TaskFilesPort

__all__ = [
    "Coordinator",
    "EgressFilesPort",
    "EgressNetworkPort",
    "FolderMarksPort",
    "NoMarks",
    "PoolSlotsPort",
    "QueueStore",
    "RepoPort",
    "RunStore",
    "Sandbox",
    "SubnetStore",
    "TaskFilesPort",
    "TaskStore",
    "WorkspacePort",
]

"""Pydantic models for everything that crosses a boundary: DB rows, files, CLI JSON."""

from launcher.models.common import Frozen, iso, utcnow
from launcher.models.config import SettingSource, SettingView
from launcher.models.doctor import CheckResult, CheckStatus
from launcher.models.pool import PoolSlot, WarmingSlot
from launcher.models.runs import NewRun, RunEventRecord, RunOwner, RunRecord
from launcher.models.sandbox import ContainerInfo, MountSpec, NetworkInfo, SandboxSpec
from launcher.models.tasks import AdoptedTask, CaseLayoutFound, NewTask, TaskRecord, TransitionRecord

__all__ = [
    "AdoptedTask",
    "CaseLayoutFound",
    "CheckResult",
    "CheckStatus",
    "ContainerInfo",
    "Frozen",
    "MountSpec",
    "NetworkInfo",
    "NewRun",
    "NewTask",
    "PoolSlot",
    "RunEventRecord",
    "RunOwner",
    "RunRecord",
    "SandboxSpec",
    "SettingSource",
    "SettingView",
    "TaskRecord",
    "TransitionRecord",
    "WarmingSlot",
    "iso",
    "utcnow",
]

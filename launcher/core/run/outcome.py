"""How a run ended, as one value, and which failures belong to the machinery, not the agent."""

from __future__ import annotations

from dataclasses import dataclass

from launcher.core.ports import RepoPort
from launcher.core.run.request import Ending
from launcher.core.runlayout import RunPaths
from launcher.errors import CapacityError, DockerError, GitLockContentionError, LockTimeoutError, StateStoreError
from launcher.models import RunRecord


@dataclass(frozen=True)
class RunOutcome:
    """Everything settle needs to know about a run that has stopped (or never started)."""

    run: RunRecord
    paths: RunPaths
    repo: RepoPort | None
    ending: Ending
    exit_code: int | None = None
    error: str | None = None
    keep: bool = False
    image: str | None = None
    infrastructure: bool = False
    # The ending is the run's own result, from the process that supervised it: written only while
    # its claim is the task's newest (else ``superseded``). False: someone settles a dead run's
    # record (gc, stop, a batch taking over) and records what happened to it as it is.
    own: bool = True


def is_infrastructure_error(exc: BaseException) -> bool:
    """Failures of the machinery, not of the agent: worth another attempt in a batch."""
    if isinstance(exc, DockerError):
        return exc.code != "image-not-found"
    return isinstance(exc, GitLockContentionError | LockTimeoutError | StateStoreError | CapacityError)

"""The one error hierarchy of launcher.

Every error a user can meet is a ``LauncherError`` carrying an exit code; each also derives
from the builtin that describes it best, so library callers can catch either. The exit codes
are part of the CLI contract and are documented in the README; change them only with it.
"""

from __future__ import annotations

import errno
from pathlib import Path
from typing import Literal


class ExitCode:
    OK = 0
    FAILURE = 1  # generic failure; also `paths check` finding hard-coded paths
    USAGE = 2  # typer/click usage errors
    CONFLICT = 3  # compare-and-set lost: the state is not what the caller expected
    ILLEGAL_TRANSITION = 4
    NOT_FOUND = 5
    INVALID_INPUT = 6
    STATE_STORE = 7  # state store unreadable, corrupt, locked too long; the case root's disk full or unwritable
    DOCKER = 8  # Docker engine unreachable, image missing or failing to build
    GIT = 9
    RUN_FAILED = 10  # the agent exited non-zero
    RUN_TIMED_OUT = 11
    RUN_CANCELLED = 12
    RUN_LOST = 13
    CAPACITY = 14  # a bounded pool (run network subnets) is used up until other runs end
    RUN_UNHARVESTED = 15  # the run's work is kept but not on its branch (`launcher import` recovers it)
    RUN_EXCEEDED = 16  # the run was stopped at a bound: its disk budget, or the disk's reserve
    CLAIMED = 17  # the task is claimed by a live run elsewhere (another CI job, a batch worker)
    PUBLISH_FAILED = 18  # the run's work is on its local branch, but the push or the pull request failed
    RUN_SUPERSEDED = 19  # a newer claim took the task over while the run lived: its work is kept, not the task's
    SERVICE_FAILED = 20  # a run's sidecar service did not become healthy: the agent never started
    INTERRUPTED = 130


class LauncherError(Exception):
    exit_code: int = ExitCode.FAILURE
    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\nhint: {self.hint}"


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP to a launcher that owns a run (a CI runner cancelling the job): handled
    like Ctrl-C, so the run is stopped, harvested and recorded cancelled."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


class InvalidInputError(LauncherError, ValueError):
    exit_code = ExitCode.INVALID_INPUT
    code = "invalid-input"


class NotFoundError(LauncherError, LookupError):
    exit_code = ExitCode.NOT_FOUND
    code = "not-found"


class NoStateStoreError(NotFoundError):
    """A read-only command found no state store where it looked, and made none."""

    code = "no-state-store"


class TransitionConflictError(LauncherError):
    """The compare-and-set lost: the current state differs from the expected one."""

    exit_code = ExitCode.CONFLICT
    code = "conflict"

    def __init__(self, message: str, *, actual: str, expected: str) -> None:
        super().__init__(message)
        self.actual = actual
        self.expected = expected


class FencedOutError(TransitionConflictError):
    """The run's claim is no longer the task's newest: another attempt took the task over.

    ``fence`` is the fencing token the caller's claim was taken with, ``current`` the task's
    claim count now (always higher: tokens only grow), ``holder`` who holds the lease now.
    """

    code = "fenced-out"

    def __init__(self, message: str, *, fence: int, current: int, holder: str | None) -> None:
        super().__init__(message, actual=str(current), expected=str(fence))
        self.fence = fence
        self.current = current
        self.holder = holder


class IllegalTransitionError(LauncherError, ValueError):
    exit_code = ExitCode.ILLEGAL_TRANSITION
    code = "illegal-transition"

    def __init__(self, message: str, *, current: str, target: str) -> None:
        super().__init__(message)
        self.current = current
        self.target = target


class StateStoreError(LauncherError, RuntimeError):
    exit_code = ExitCode.STATE_STORE
    code = "state-store"


LockedResource = Literal["store", "task-file", "repository", "engine", "pool"]
# A lock timeout exits with the code of what the lock guards, so a script can tell which
# resource was busy: a repository is git's (9), the engine's objects Docker's (8).
_LOCK_EXIT_CODES: dict[str, int] = {
    "store": ExitCode.STATE_STORE,
    "task-file": ExitCode.STATE_STORE,
    "repository": ExitCode.GIT,
    "engine": ExitCode.DOCKER,
    "pool": ExitCode.STATE_STORE,
}


class LockTimeoutError(LauncherError, TimeoutError):
    exit_code = ExitCode.STATE_STORE
    code = "lock-timeout"

    def __init__(self, path: str, waited: float, resource: LockedResource = "store") -> None:
        super().__init__(
            f"could not take the {resource} lock {path} within {waited:.1f}s",
            hint="another launcher process holds it; retry, or check for a hung process",
        )
        self.path = path
        self.resource = resource
        self.exit_code = _LOCK_EXIT_CODES[resource]


class HostStorageError(LauncherError, OSError):
    """The case root's disk refused a write (full, read-only, permissions): nothing half-written kept."""

    exit_code = ExitCode.STATE_STORE
    code = "host-storage"

    @classmethod
    def of(cls, exc: OSError, what: str) -> HostStorageError:
        where = f" ({exc.filename})" if exc.filename else ""
        hints = {
            errno.ENOSPC: "the disk under the case root is full; free space (`launcher gc` removes what runs left)",
            errno.EDQUOT: "the disk quota under the case root is used up; free space",
            errno.EROFS: "the case root is on a read-only file system",
            errno.EACCES: "check the permissions of the case root and its .launcher folder",
            errno.EPERM: "check the permissions of the case root and its .launcher folder",
        }
        return cls(
            f"cannot {what}: {exc.strerror or exc}{where}",
            hint=hints.get(exc.errno or 0, "check the case root's disk and permissions"),
        )


class GitError(LauncherError, RuntimeError):
    exit_code = ExitCode.GIT
    code = "git"


class GitLockContentionError(GitError):
    """git could not take one of its own lock files; transient, worth retrying."""

    code = "git-lock"


class DockerError(LauncherError, RuntimeError):
    exit_code = ExitCode.DOCKER
    code = "docker"


class DockerUnavailableError(DockerError, ConnectionError):
    code = "docker-unavailable"


class SubnetInUseError(DockerError):
    """Something else on the engine already uses a run-network subnet: take another slot."""

    code = "subnet-in-use"


class PortInUseError(DockerError):
    """Something else on this engine or host already holds a host port: take another."""

    code = "port-in-use"

    def __init__(self, message: str, *, port: int) -> None:
        super().__init__(message)
        self.port = port


class ServiceFailedError(LauncherError, RuntimeError):
    """A run's sidecar service did not become healthy in time (or exited): the run ends before its
    agent starts, and that is the service's failure, not the agent's."""

    exit_code = ExitCode.SERVICE_FAILED
    code = "service-failed"

    def __init__(self, message: str, *, service: str, log: str | None = None) -> None:
        super().__init__(message)
        self.service = service
        self.log = log


class ImageNotFoundError(DockerError, LookupError):
    code = "image-not-found"


class HarvestIncompleteError(LauncherError, RuntimeError):
    """What a run made could not all be put where it belongs (its branch, its refs); it is kept."""

    exit_code = ExitCode.RUN_UNHARVESTED
    code = "unharvested"


class BundleOverCapError(HarvestIncompleteError):
    """A run's bundle is bigger than ``[run] bundle_max``; ``kept`` is where it is kept, if it is."""

    code = "bundle-over-cap"

    def __init__(self, message: str, *, kept: Path | None, size: int, max_bytes: int) -> None:
        super().__init__(message)
        self.kept = kept
        self.size = size
        self.max_bytes = max_bytes


class TaskClaimedError(LauncherError, RuntimeError):
    """The task's claim is held by a live run elsewhere; starting another would run it twice."""

    exit_code = ExitCode.CLAIMED
    code = "claimed"


class PublishError(LauncherError, RuntimeError):
    """The host could not push the run's branch or open its pull request; the branch is kept locally."""

    exit_code = ExitCode.PUBLISH_FAILED
    code = "publish-failed"


class CapacityError(LauncherError, RuntimeError):
    """Every slot of a bounded pool is held by live runs: worth retrying once some end."""

    exit_code = ExitCode.CAPACITY
    code = "capacity"


# A run's end state is the exit status of the command that waited for it (`run`, `run-supervisor`).
RUN_STATE_EXIT_CODES: dict[str, int] = {
    "exited": ExitCode.OK,
    "failed": ExitCode.RUN_FAILED,
    "timed-out": ExitCode.RUN_TIMED_OUT,
    "cancelled": ExitCode.RUN_CANCELLED,
    "lost": ExitCode.RUN_LOST,
    "unharvested": ExitCode.RUN_UNHARVESTED,
    "exceeded": ExitCode.RUN_EXCEEDED,
    "superseded": ExitCode.RUN_SUPERSEDED,
}


def exit_code_of_run(state: str) -> int:
    return RUN_STATE_EXIT_CODES.get(state, ExitCode.FAILURE)

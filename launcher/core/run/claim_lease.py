"""A run's claim on its task: one live run per task, across processes and machines.

`launcher run` takes the task's claim in the coordinator (a compare-and-set, like a batch
worker's) before anything of the run exists, keeps it alive from a thread of the process that
owns the run, and gives it back once the run has settled and, if asked, published (publish
checks the claim's token, so the claim is held through it; renewals stop at settle, which leaves
a publish at least three quarters of the lease). A second job on the task is refused
(TaskClaimedError, exit 17) unless it asks for a second attempt (``--concurrent``).

The lease lasts `[run] claim_lease` (60 s) and is renewed every quarter of it, from the claim on (preparing
a big worktree or harvesting a big bundle is covered as well as the agent's time). A minute
because it bounds two things against each other: how long the task of a launcher that died
(SIGKILL, a lost CI runner) stays blocked before the next job may take it, and how long the
coordinator may be unreachable (a PostgreSQL failover, a busy SQLite file) before a living
run loses its claim: three renewals in a row may fail first.

The claim's owner is the process (host, pid, start time) plus ``run``, so whoever settles the
run later (gc, `launcher stop`, a batch taking over) can give a dead run's claim back without
having been told its name; a batch worker's claims end in the worker's number instead, and its
runs go under that claim (the batch renews and releases it).

Fencing. Every claim carries a token from the coordinator: the task's ``claims`` count right
after it was taken, which grows by one whenever someone takes the task over. A lease is only as
good as the clock and the network of whoever holds it: a box cut off from the coordinator, a
paused or swapped-out process, a long GC pause all outlive their lease without knowing. So the
steps that make a run's result the task's result check the token against the coordinator, as a
compare-and-set, not the lease: the run's final state (settle, in the same transaction under
the task's row lock), each task change the agent asked for, the publish of its branch and pull
request, and the release of the claim. A run whose token is no longer the newest ends
``superseded``: its work is harvested and kept on its own branch and listed in its record,
never dropped and never the task's result (launcher.core.run.settle). A ``--concurrent`` run
that holds no claim has no token and none of this applies to it: it is a second attempt by
request, and its result is recorded as any run's.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

from launcher.core.ports import Coordinator
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import LauncherError
from launcher.models import RunOwner, RunRecord

RENEWALS_PER_LEASE = 4


def process_prefix(owner: RunOwner) -> str:
    """What every claim a process takes starts with (batch workers' included)."""
    return f"{owner.host}:{owner.pid}:{owner.start_ticks}:"


def run_lease_owner(owner: RunOwner) -> str:
    """The claim owner of a run supervised by ``owner`` (not a batch's)."""
    return process_prefix(owner) + "run"


def held_by_batch_of(owner: RunOwner, holder: str | None) -> bool:
    """Whether ``holder`` is a batch worker of the process that owns the run: its own claim."""
    return holder is not None and holder.startswith(process_prefix(owner)) and holder != run_lease_owner(owner)


@dataclass(frozen=True)
class RunClaim:
    """How a run holds its task: its own claim, a batch worker's (``borrowed``), or none
    (``--concurrent`` while another run holds it)."""

    owner: str | None
    fence: int | None = None
    borrowed: bool = False

    def recorded(self) -> dict[str, Any]:
        """As the run's record keeps it (``details.claim``)."""
        return {"owner": self.owner, "fence": self.fence, "borrowed": self.borrowed}


def fence_of(run: RunRecord) -> int | None:
    """The fencing token of the claim ``run`` went under; None: it held none (``--concurrent``,
    or a record from before claims carried tokens), and is not fenced."""
    claim = run.details.claim
    if claim is None or claim.owner is None:
        return None
    return claim.fence


class ClaimRenewal:
    """Renews a run's claim until the run is no longer live, the claim is lost, or ``stop()``."""

    def __init__(self, store: Coordinator, task_id: str, run_id: str, claim: RunClaim, lease_seconds: float) -> None:
        self.store, self.task_id, self.run_id = store, task_id, run_id
        self.claim, self.lease_seconds = claim, lease_seconds
        self.owner = claim.owner or ""
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name=f"claim-{run_id}", daemon=True)

    def start(self) -> ClaimRenewal:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.lease_seconds)

    def _renew(self) -> None:
        interval = self.lease_seconds / RENEWALS_PER_LEASE
        while not self._stop.wait(interval):
            try:
                if self.store.get_run(self.run_id).state not in LIVE_RUN_STATES:
                    return  # settled (by gc, say): nothing left to hold the task for
                if self.store.renew_lease(self.task_id, self.owner, self.lease_seconds):
                    continue
            except LauncherError:
                continue  # the coordinator is briefly away: the lease has room for a few misses
            except Exception:  # the connection closed under us as the process ends
                return
            # Another job took the task over after our lease ran out (this process stalled, or
            # the coordinator was away too long): say so in the run's record and stop renewing.
            self.lost = True
            with contextlib.suppress(LauncherError):
                self.store.update_run(self.run_id, details={"claim": {**self.claim.recorded(), "lost": True}})
            return


_renewals: dict[str, ClaimRenewal] = {}
_renewals_lock = threading.Lock()


def keep_alive(store: Coordinator, task_id: str, run_id: str, claim: RunClaim, lease_seconds: float) -> None:
    """Start renewing the run's own claim from this process (it owns the run); a borrowed
    claim is its batch's to renew, and no claim needs nothing."""
    if claim.owner is None or claim.borrowed:
        return
    renewal = ClaimRenewal(store, task_id, run_id, claim, lease_seconds).start()
    with _renewals_lock:
        _renewals[run_id] = renewal


def stop_renewal(run_id: str) -> None:
    """Stop this process's renewal of the run's claim, if it renews one (idempotent)."""
    with _renewals_lock:
        renewal = _renewals.pop(run_id, None)
    if renewal is not None:
        renewal.stop()

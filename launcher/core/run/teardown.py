"""Teardown: what a settled run still holds that its result does not need, removed after it.

Settle records the result first (the agent's work harvested onto its branch or kept, the
network's decision log taken, the ending written); the run's container, its network (or its
hand-back as a spare) and its folders (the retired worktree, the sandbox) are removed after
that, here. `launcher run` prints its result and leaves this to a child process it forks
(``PendingTeardowns``), so the caller gets its exit status without waiting for it; everyone
else (batch, gc, stop) does it at once.

Nothing here holds the agent's work: a teardown that fails, or whose process dies, leaves
leftovers of a settled run that `launcher gc` removes. While one is in progress its run's
teardown lock is held (taken before the ending is recorded), and gc and `launcher rm` wait for
it or leave that run alone. The subnet lease goes only after the network is gone, and every
next run has its own worktree, branch and container: nothing of a next run meets a teardown.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from launcher.core.ports.teardown import TeardownHold
from launcher.core.run.deps import RunDeps
from launcher.errors import LauncherError
from launcher.models import RunRecord


@dataclass
class Teardown:
    run: RunRecord
    container_id: str | None
    # Removed in this order: the retired worktree's trash folder, then the sandbox folder.
    folders: list[Path]
    hold: TeardownHold


def take_apart(deps: RunDeps, teardown: Teardown) -> None:
    """Remove what the settled run still holds (each step even when another failed); what could
    not be removed goes into the run's errors, for gc to finish."""
    run, problems = teardown.run, []
    try:
        deps.checkpoint("before:teardown")
        if teardown.container_id:
            try:
                deps.sandbox.remove(teardown.container_id)
            except LauncherError as exc:
                problems.append(f"container cleanup: {exc}")
        if deps.egress is not None:
            # After the container: a spare is kept only with nothing but the proxy on it.
            deps.egress.release(run, problems)
        for folder in teardown.folders:
            try:
                deps.workspace.remove_tree(folder)
            except (LauncherError, OSError) as exc:
                problems.append(f"cleanup: {exc}")
        deps.checkpoint("after:teardown")
        if problems:
            _record(deps, run.id, problems)
    finally:
        teardown.hold.release()


def _record(deps: RunDeps, run_id: str, problems: list[str]) -> None:
    try:
        current = deps.store.get_run(run_id)
        deps.store.update_run(run_id, details={"errors": [*(current.details.errors or []), *problems]})
    except LauncherError:
        return  # the leftovers are gc's all the same: it finds them by label and mark


@dataclass
class PendingTeardowns:
    """Teardowns handed over by settle instead of done at once: `launcher run` does them in a
    forked child after its result is printed (launcher/cli/app_context.py)."""

    items: list[Teardown] = field(default_factory=list)

    def add(self, teardown: Teardown) -> None:
        self.items.append(teardown)

    def take(self) -> list[Teardown]:
        taken, self.items = self.items, []
        return taken

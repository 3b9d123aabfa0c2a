"""A planned, claimed run from preparation to its settled record.

Every step is recorded in the coordinator before the next begins, so a launcher that dies
anywhere leaves a run that `launcher gc` can find and settle. Whatever goes wrong on the way,
the run is settled before the error goes on.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor

from launcher.core import uids
from launcher.core.egress import RunNetwork
from launcher.core.run.container import run_spec
from launcher.core.run.deps import RunDeps
from launcher.core.run.outcome import RunOutcome, is_infrastructure_error
from launcher.core.run.output import Echo, RunOutput
from launcher.core.run.pool_take import POOL_READY_LINE, start_from_pool
from launcher.core.run.publish import publish_settled
from launcher.core.run.request import Ending, RunPlan
from launcher.core.run.secrets import Redactor
from launcher.core.run.services import open_sidecars
from launcher.core.run.settle import release_claim, settle
from launcher.core.run.supervise import supervise
from launcher.core.run.workspace import prepare_workspace
from launcher.core.runlayout import RunPaths
from launcher.core.transitions import RunState
from launcher.errors import Interrupted, LauncherError
from launcher.models import RunRecord, utcnow


def execute(deps: RunDeps, plan: RunPlan, run: RunRecord, echo: Echo | None = None) -> RunRecord:
    output = RunOutput(
        deps.sandbox,
        deps.paths(run).log,
        Redactor([*plan.secrets.values(), *plan.api_key_values.values(), *plan.redact]),
        log_max=deps.defaults.log_max,
        echo=echo,
    )
    try:
        return _execute(deps, plan, run, output)
    finally:
        output.close()


def _execute(deps: RunDeps, plan: RunPlan, run: RunRecord, output: RunOutput) -> RunRecord:
    store, paths, step = deps.store, deps.paths(run), deps.checkpoint
    container_id: str | None = None
    ending: Ending = "failed"
    exit_code: int | None = None
    error: str | None = None
    infrastructure = False
    unexpected: Exception | None = None
    try:
        run = store.update_run(run.id, expected=[RunState.CREATED], state=RunState.PREPARING)
        container_id = start_from_pool(
            deps, plan, run, paths, before_go=lambda slot: output.attach(slot, engine_prefix=POOL_READY_LINE)
        )
        if container_id is None:
            container_id = _start_from_scratch(deps, plan, run, paths, output)
        run = store.update_run(run.id, expected=[RunState.PREPARING], state=RunState.RUNNING, started_at=utcnow())
        step("after:start")
        ending, exit_code = supervise(deps, run, container_id, plan, paths)
        step("after:wait")
    except KeyboardInterrupt as exc:
        # Ctrl-C, or SIGTERM/SIGHUP (a CI runner cancelling the job): the agent gets its grace.
        how = exc.signal_name if isinstance(exc, Interrupted) else "Ctrl-C"
        ending, error = "cancelled", f"interrupted ({how})"
        _stop(deps, container_id, plan.grace)
    except LauncherError as exc:
        ending, error, infrastructure = "failed", str(exc), is_infrastructure_error(exc)
        _stop(deps, container_id, 0)
    except Exception as exc:
        # A defect or an unforeseen failure: the run is still settled (its container and
        # folders removed, the record saying why) before the error goes on to the caller.
        ending, error, unexpected = "failed", f"internal error: {type(exc).__name__}: {exc}", exc
        _stop(deps, container_id, 0)
    if container_id is not None and output.attached:
        # Before settle removes the container: the engine's copy of the output goes with it.
        problem = _record_output(deps, run, container_id, output)
        if problem and not error:
            error = problem
    settled = settle(
        deps,
        RunOutcome(
            run=run,
            paths=paths,
            repo=plan.repo,
            ending=ending,
            exit_code=exit_code,
            error=error,
            keep=plan.keep_worktree,
            image=plan.image,
            infrastructure=infrastructure,
        ),
        release=False,
    )
    try:
        if unexpected is None and plan.publish is not None:
            # After settle: the run's result stands whatever the remote says (recorded, exit 18).
            # Before the claim goes back: publish checks the claim's token, which a job taking
            # the released task would move on.
            settled = publish_settled(deps, plan.publish, settled, plan.repo)
    finally:
        settled = release_claim(deps, settled)
    if unexpected is not None:
        raise unexpected
    return settled


def _record_output(deps: RunDeps, run: RunRecord, container_id: str, output: RunOutput) -> str | None:
    try:
        deps.store.update_run(run.id, details=output.finish(container_id).details())
    except LauncherError as exc:
        return f"recording the run's output: {exc}"
    return None


def _start_from_scratch(deps: RunDeps, plan: RunPlan, run: RunRecord, paths: RunPaths, output: RunOutput) -> str:
    uid, gid = uids.run_ids(run.seq, deps.defaults)
    # The network (Docker round trips) is made while the worktree is checked out (git).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"network-{run.id}") as pool:
        network_made = pool.submit(_open_network, deps, plan, run)
        prepare_workspace(deps, plan, run, paths, uid, gid)
        network = network_made.result()
    # Services healthy and ports published before the agent exists: it starts into a ready world.
    sidecars = open_sidecars(
        deps, run, plan.ports, plan.services, runtime=plan.runtime, uid=uid, gid=gid, network=network
    )
    deps.checkpoint("before:create")
    container_id = deps.sandbox.create(run_spec(deps, plan, run, paths, uid, gid, network, sidecars))
    deps.store.update_run(run.id, container_id=container_id)
    deps.checkpoint("after:create")
    output.attach(container_id)
    deps.sandbox.start(container_id)
    return container_id


def _open_network(deps: RunDeps, plan: RunPlan, run: RunRecord) -> RunNetwork | None:
    if plan.egress.mode == "none" or deps.egress is None:
        return None
    deps.checkpoint("before:network")
    network = deps.egress.open(run, plan.egress, plan.api_key_values)
    deps.checkpoint("after:network")
    return network


def _stop(deps: RunDeps, container_id: str | None, grace: float) -> None:
    """Stop the agent (at once with no grace); a failure here is settle's to report (it kills and
    removes again)."""
    if container_id:
        with contextlib.suppress(LauncherError):
            deps.sandbox.stop(container_id, grace)

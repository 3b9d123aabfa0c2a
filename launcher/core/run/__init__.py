"""A run, step by step: plan, claim, workspace (or a warm slot), container, supervise, harvest, settle.

One module per step; ``RunService`` is the façade callers use.
"""

from launcher.core.run.deps import RunDeps
from launcher.core.run.outcome import RunOutcome, is_infrastructure_error
from launcher.core.run.request import Ending, RunPlan, RunRequest
from launcher.core.run.service import RunService

__all__ = ["Ending", "RunDeps", "RunOutcome", "RunPlan", "RunRequest", "RunService", "is_infrastructure_error"]

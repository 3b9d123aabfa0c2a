"""The security profile of a run's container, observed from inside by a real agent.

Not root, no capabilities, no new privileges, read-only root file system, no Docker socket,
no view of the state store, of launcher's folders or of other tasks' files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import (
    Case,
    agent_image,
    case,
    facts,
    launcher_roots,
    run_id_of,
)

__all__ = ["agent_image", "case", "launcher_roots"]
pytestmark = pytest.mark.docker

PROBE = r"""
set -u
echo "FACT uid=$(id -u)"
echo "FACT gid=$(id -g)"
for cap in CapInh CapPrm CapEff CapBnd CapAmb NoNewPrivs; do
    echo "FACT $cap=$(awk -v k="$cap:" '$1 == k {print $2}' /proc/self/status)"
done
if touch /etc/x 2>/dev/null; then echo "FACT touch_etc=allowed"; else echo "FACT touch_etc=refused"; fi
if touch /x 2>/dev/null; then echo "FACT touch_root=allowed"; else echo "FACT touch_root=refused"; fi
if touch /tmp/x 2>/dev/null; then echo "FACT touch_tmp=allowed"; else echo "FACT touch_tmp=refused"; fi
for sock in /var/run/docker.sock /run/docker.sock; do
    if [ -e "$sock" ]; then echo "FACT socket $sock=present"; else echo "FACT socket $sock=absent"; fi
done
if [ -e /case/.launcher/state.db ]; then echo "FACT state_db=visible"; else echo "FACT state_db=hidden"; fi
if [ -e /case/.launcher ]; then echo "FACT launcher_dir=$(ls -A /case/.launcher 2>&1 | tr '\n' ';')"
else echo "FACT launcher_dir=absent"; fi
echo "FACT tasks_active=$(ls -A /case/tasks/active 2>&1 | tr '\n' ';')"
if [ -e "/case/tasks/active/$OTHER_TASK.task.json" ]; then echo "FACT other_task=visible"
else echo "FACT other_task=hidden"; fi
if grep -rqs "$OTHER_TASK" /case; then echo "FACT other_task_text=found"; else echo "FACT other_task_text=absent"; fi
if touch /case/probe 2>/dev/null; then echo "FACT case_root=writable"; else echo "FACT case_root=read-only"; fi
"""


def test_container_runs_unprivileged_and_sees_only_its_own_task(case: Case, git_repo: Path) -> None:
    other = case.create_task(git_repo, "Somebody else's secret plan")
    mine = case.create_task(git_repo, "My own task")
    tasks_dir = case.root / "tasks" / "active"
    assert (tasks_dir / f"{other}.task.json").is_file()

    result = case.cli("run", mine, "--", "sh", "-c", f"OTHER_TASK={other}\n{PROBE}")

    assert result.exit_code == 0, result.stdout + result.stderr
    record = case.run_record(run_id_of(result.stderr))
    seen = facts(result.stdout)
    # An unprivileged per-run uid, not root and not the image's named account.
    assert seen["uid"] != "0"
    assert seen["gid"] != "0"
    assert int(seen["uid"]) == record["uid"] >= 20000
    # All capabilities dropped, and no way to regain any.
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen[cap], 16) == 0, f"{cap} = {seen[cap]}"
    assert seen["NoNewPrivs"] == "1"
    # Read-only root file system; only the tmpfs folders are writable.
    assert seen["touch_etc"] == "refused"
    assert seen["touch_root"] == "refused"
    assert seen["touch_tmp"] == "allowed"
    assert seen["socket /var/run/docker.sock"] == "absent"
    assert seen["socket /run/docker.sock"] == "absent"
    # The case root is there, read-only, without the state store or launcher's folders.
    assert seen["state_db"] == "hidden"
    assert seen["launcher_dir"] == "absent", "launcher's folder is not even an empty mount point"
    assert seen["case_root"] == "read-only"
    # Only the run's own task files under /case/tasks/active.
    assert set(seen["tasks_active"].rstrip(";").split(";")) == {f"{mine}.task.json", f"{mine}.md"}
    assert seen["other_task"] == "hidden"
    assert seen["other_task_text"] == "absent"
    # ... while on the host both tasks are still there.
    assert (tasks_dir / f"{other}.task.json").is_file()
    assert (tasks_dir / f"{mine}.task.json").is_file()
    assert not (case.root / "probe").exists()

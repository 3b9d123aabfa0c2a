"""The CI flow end to end: plan in one clone, jobs in fresh clones, every result on the forge.

As examples/github-actions.yml does it, on one machine: a shared PostgreSQL coordinator, the
harness (case root) checked out afresh by every job, the repository named portably (its remote
URL: the forge), and every job publishing with `--push` through the host's token. The plan's
folder is deleted before the jobs start and every job's folder after they end: what is left is
the forge, which must hold exactly one branch per task with that task's agent commit. A fourth
job started on a task another job is running is refused (exit 17) and makes nothing.

The forge is the stand-in of tests/forgekit.py (git's smart HTTP with basic auth on loopback).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from forgekit import Forge
from helpers import git, make_repo
from pg import pg_server, pg_url
from runkit import Case

__all__ = ["pg_server", "pg_url"]

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Commits a file named after its task; sleeps so that a second job on the same task overlaps it.
AGENT = (
    'echo "$CASE_TASK_ID" > "done-$CASE_TASK_ID.txt" && git add -A && git commit -q -m "work on $CASE_TASK_ID"; sleep 3'
)
CLAIMED = 17


def _askpass(forge: Forge, at: Path) -> Path:
    """The CI runner's own git credential (for the clone cache's clone and fetch): a host file."""
    script = at / "askpass.sh"
    script.write_text(f'#!/bin/sh\ncase "$1" in Username*) echo {forge.user};; *) echo {forge.token};; esac\n')
    script.chmod(0o700)
    return script


def _harness(at: Path, forge: Forge) -> Path:
    """The harness repository every job checks out: launcher.toml says how to publish."""
    toml = f'[publish]\ntoken_env = "FORGE_TOKEN"\ntoken_user = "{forge.user}"\n'
    return make_repo(at, {"launcher.toml": toml, "README.md": "# harness\n"})


def _checkout(harness: Path, at: Path, launcher_roots: list[Path]) -> Case:
    git("clone", "-q", str(harness), str(at), cwd=harness.parent)
    launcher_roots.append(at.resolve())
    return Case(at.resolve())


def test_three_ci_jobs_in_fresh_clones_leave_one_branch_per_task_on_the_forge(
    forge: Forge, pg_url: str, tmp_path: Path, launcher_roots: list[Path]
) -> None:
    forge.create_repo("api")
    source = make_repo(tmp_path / "source")
    git("push", "-q", forge.url("api").replace("@", f":{forge.token}@", 1), "main", cwd=source)
    harness = _harness(tmp_path / "harness", forge)
    env = {"LAUNCHER_STATE_URL": pg_url, "FORGE_TOKEN": forge.token, "GIT_ASKPASS": str(_askpass(forge, tmp_path))}

    # The plan job: its own clone of the harness and of the repository, three tasks queued.
    plan = _checkout(harness, tmp_path / "plan", launcher_roots)
    plan.ok("init", env=env)
    checkout = tmp_path / "plan" / "api"
    subprocess.run(
        ["git", "clone", "-q", forge.url("api"), str(checkout)], env={**env, "PATH": "/usr/bin:/bin"}, check=True
    )
    tasks = [
        json.loads(plan.ok("task", "create", "--repo", str(checkout), "--title", title, "--queue", "--json",
                           "--", "sh", "-c", AGENT, env=env).stdout)["id"]
        for title in ("First", "Second", "Third")
    ]  # fmt: skip
    matrix = json.loads(plan.ok("matrix", "--format", "json", env=env).stdout)
    assert sorted(item["task"] for item in matrix["include"]) == sorted(tasks)
    shutil.rmtree(tmp_path / "plan")  # the plan runner is gone; so is the creator's checkout

    # Three jobs, one per task, each in a fresh clone of the harness; a fourth on the first task.
    jobs = {task: _checkout(harness, tmp_path / f"job-{n}", launcher_roots) for n, task in enumerate(tasks)}
    duplicate = _checkout(harness, tmp_path / "job-dup", launcher_roots)
    procs = {
        task: job.popen("run", task, "--push", "--json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for task, job in jobs.items()
    }
    procs["dup"] = duplicate.popen(
        "run", tasks[0], "--push", "--json", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    finished = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        finished[name] = (proc.returncode, out, err)

    codes = {name: code for name, (code, _, _) in finished.items()}
    first = sorted([codes[tasks[0]], codes["dup"]])
    assert first == [0, CLAIMED], {n: (c, o[-1500:], e[-1500:]) for n, (c, o, e) in finished.items()}
    assert codes[tasks[1]] == codes[tasks[2]] == 0, {n: (c, o[-1500:], e[-1500:]) for n, (c, o, e) in finished.items()}
    records = {}
    for name, (code, out, _) in finished.items():
        if code == 0:
            record = json.loads(out)
            assert record["publish"]["pushed"] is True, record["publish"]
            records[record["task_id"]] = record
    assert sorted(records) == sorted(tasks), "each task ran exactly once"

    for folder in tmp_path.glob("job-*"):
        shutil.rmtree(folder)  # the runners are gone

    branches = forge.branches("api")
    assert sorted(branches) == sorted(["main", *(f"launcher/{task}/1" for task in tasks)])
    mirror = tmp_path / "mirror.git"
    git("clone", "-q", "--mirror", forge.url("api").replace("@", f":{forge.token}@", 1), str(mirror), cwd=tmp_path)
    for task in tasks:
        branch = f"launcher/{task}/1"
        assert branches[branch] == records[task]["publish"]["sha"]
        subject = git(f"--git-dir={mirror}", "log", "-1", "--format=%s", branch, cwd=tmp_path).strip()
        assert subject == f"work on {task}"
        files = git(f"--git-dir={mirror}", "show", "--name-only", "--format=", branch, cwd=tmp_path).split()
        assert files == [f"done-{task}.txt"]

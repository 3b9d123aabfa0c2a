"""Eight `launcher run` processes on one repository at the same moment.

case's agents shared the main checkout: one `.case/active`, one index, `git checkout -b`
colliding. Here every run must get its own branch with exactly its own commit, its own
`.case/active`, and leave the main checkout (HEAD, index, working tree) untouched.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from runkit import Case, branches, cli_env, head_of, repo_git, tree_snapshot, wait_for, worktree_paths

pytestmark = pytest.mark.docker

RUNS = 8
AGENT = r"""
set -eu
echo "active=$(cat .case/active)"
echo "$CASE_RUN_ID" > "file-$CASE_TASK_ID.txt"
git add "file-$CASE_TASK_ID.txt"
git commit -q -m "run $CASE_RUN_ID"
"""

# Waits (imports done) until the test writes a byte to its stdin, then is `python -m launcher ARGS`.
GATED_LAUNCHER = r"""
import pathlib, runpy, sys
import launcher.cli, launcher.core.run, launcher.adapters.docker.sandbox  # warm up before the start
pathlib.Path(sys.argv[1]).touch()
sys.stdin.buffer.read(1)
sys.argv = ["launcher", *sys.argv[2:]]
runpy.run_module("launcher", run_name="__main__", alter_sys=True)
"""


@pytest.mark.slow
def test_eight_concurrent_runs_each_get_their_own_branch_and_scope(case: Case, git_repo: Path, tmp_path: Path) -> None:
    repo = git_repo
    base = head_of(repo)
    before = {
        "head": repo_git(repo, "symbolic-ref", "HEAD"),
        "status": repo_git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored"),
        "index": (repo / ".git" / "index").read_bytes(),
        "tree": tree_snapshot(repo),
    }
    gate = tmp_path / "gate"
    gate.mkdir()
    procs: list[subprocess.Popen[bytes]] = []
    outputs = []
    for index in range(RUNS):
        out, err = (tmp_path / f"run-{index}.out").open("wb"), (tmp_path / f"run-{index}.err").open("wb")
        outputs.append((out, err))
        argv = case.argv("run", "--repo", str(repo), "--title", f"Agent number {index}", "--", "sh", "-c", AGENT)
        proc = subprocess.Popen(
            [sys.executable, "-c", GATED_LAUNCHER, str(gate / f"ready-{index}"), *argv[3:]],
            stdin=subprocess.PIPE,
            stdout=out,
            stderr=err,
            env=cli_env(),
        )
        procs.append(proc)
        case.procs.append(proc)

    def all_ready() -> bool:
        assert all(p.poll() is None for p in procs), "a launcher died before the start"
        return len(list(gate.glob("ready-*"))) == RUNS

    wait_for(all_ready, timeout=120, what="all launchers to reach the start gate")
    for proc in procs:  # release them together
        assert proc.stdin is not None
        proc.stdin.write(b"g")
        proc.stdin.close()
    deadline = time.monotonic() + 240
    for proc in procs:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    for out, err in outputs:
        out.close()
        err.close()

    results = []
    for index, proc in enumerate(procs):
        stdout = (tmp_path / f"run-{index}.out").read_text()
        stderr = (tmp_path / f"run-{index}.err").read_text()
        assert proc.returncode == 0, f"run {index} -> {proc.returncode}\n{stdout}\n{stderr}"
        results.append((stdout, stderr))

    runs = case.runs()
    assert len(runs) == RUNS
    assert [r["state"] for r in runs] == ["exited"] * RUNS
    assert [r["exit_code"] for r in runs] == [0] * RUNS
    assert len({r["task_id"] for r in runs}) == RUNS
    by_id = {r["id"]: r for r in runs}

    # Each process ran its own run and its agent saw its own .case/active.
    announced = set()
    for stdout, stderr in results:
        run_id = next(line.split()[2] for line in stderr.splitlines() if " on branch " in line)
        announced.add(run_id)
        task_id = by_id[run_id]["task_id"]
        assert stdout.splitlines()[0] == f"active={task_id}", stdout
        log = Path(by_id[run_id]["log"]).read_text()
        assert f"active={task_id}\n" in log
        assert [line for line in log.splitlines() if line.startswith("active=")] == [f"active={task_id}"]
    assert announced == set(by_id)

    # Eight distinct branches, each exactly one commit on top of main, adding only its own file.
    assert sorted(branches(repo)) == sorted(r["branch"] for r in runs)
    for run in runs:
        branch, task_id = run["branch"], run["task_id"]
        assert branch == f"launcher/{task_id}/1"
        commits = repo_git(repo, "rev-list", f"{base}..{branch}").split()
        assert len(commits) == 1, f"{branch} has {len(commits)} commits on top of main"
        assert head_of(repo, f"{branch}~1") == base
        assert repo_git(repo, "diff", "--name-only", base, branch).split() == [f"file-{task_id}.txt"]
        assert repo_git(repo, "show", f"{branch}:file-{task_id}.txt") == f"{run['id']}\n"
        assert repo_git(repo, "log", "-1", "--format=%s", branch).strip() == f"run {run['id']}"
        assert run["details"]["harvest"]["tip"] == commits[0]

    # The main checkout is exactly as it was: HEAD, index bytes, status, working tree.
    assert head_of(repo) == base == head_of(repo, "main")
    assert repo_git(repo, "symbolic-ref", "HEAD") == before["head"]
    assert (repo / ".git" / "index").read_bytes() == before["index"]
    assert repo_git(repo, "status", "--porcelain", "--untracked-files=all", "--ignored") == before["status"]
    assert tree_snapshot(repo) == before["tree"]
    assert not (repo / ".case").exists()

    # Nothing left running or lying around.
    assert worktree_paths(repo) == [str(repo)]
    assert case.containers() == []
    assert case.runs(live_only=True) == []

"""One run end to end: what the agent finds inside its container, and what it leaves on the host.

Real Docker engine, real git, the real CLI in a separate process.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from runkit import Case, facts, git, head_of, make_repo, run_id_of, worktree_paths

pytestmark = pytest.mark.docker

# Everything an agent (case's scripts) relies on, printed as `FACT name=value` lines.
INSIDE_AGENT = r"""
set -u
for v in CASE_ROOT CASE_TASK_ID CASE_RUN_ID CASE_BRANCH CASE_WORKTREE CASE_TASK_SLUG; do
    echo "FACT env.$v=$(printenv "$v" || echo '<unset>')"
done
echo "FACT pwd=$(pwd)"
echo "FACT active=$(cat .case/active)"
echo "FACT status.before=$(git status --porcelain | tr '\n' ';')"
echo "agent edit" >> README.md
echo "FACT diff=$(git diff --name-only | tr '\n' ';')"
echo "created by $CASE_RUN_ID" > agent.txt
git add README.md agent.txt && echo "FACT add=ok"
echo "FACT staged=$(git diff --cached --name-only | tr '\n' ';')"
git commit -q -m "agent commit" && echo "FACT commit=ok"
echo "FACT log=$(git log --format=%s | tr '\n' ';')"
echo "FACT branches=$(git branch --format='%(refname:short)' | tr '\n' ';')"
echo "FACT current=$(git rev-parse --abbrev-ref HEAD)"
echo "FACT status.after=$(git status --porcelain | tr '\n' ';')"
"""


def test_agent_sees_its_run_facts_and_a_working_git(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    task_id = case.create_task(git_repo, "Inside the box", "--", "sh", "-c", INSIDE_AGENT)
    slug = case.json("task", "show", task_id)["slug"]

    result = case.cli("run", task_id)

    assert result.exit_code == 0, result.stderr
    run_id = run_id_of(result.stderr)
    record = case.run_record(run_id)
    seen = facts(result.stdout)
    assert seen["env.CASE_ROOT"] == "/case"
    assert seen["env.CASE_TASK_ID"] == task_id
    assert seen["env.CASE_RUN_ID"] == run_id
    assert seen["env.CASE_BRANCH"] == record["branch"] == f"launcher/{task_id}/1"
    assert seen["env.CASE_TASK_SLUG"] == slug
    assert seen["env.CASE_WORKTREE"] == seen["pwd"] == "/workspace"
    assert seen["active"] == task_id
    # A fresh checkout is clean: .case/ (the run's scope) is not reported as untracked.
    assert seen["status.before"] == ""
    assert seen["diff"] == "README.md;"
    assert seen["add"] == "ok"
    assert seen["staged"] == "README.md;agent.txt;"
    assert seen["commit"] == "ok"
    assert seen["log"] == "agent commit;initial commit;"
    assert seen["current"] == record["branch"]
    assert set(seen["branches"].rstrip(";").split(";")) == {"main", record["branch"]}
    assert seen["status.after"] == ""

    # On the host: the commit landed on the run's branch, on top of main; nothing else moved.
    assert record["state"] == "exited"
    assert record["exit_code"] == 0
    tip = head_of(git_repo, record["branch"])
    assert git("rev-list", f"{base}..{tip}", cwd=git_repo).split() == [tip]
    assert head_of(git_repo, f"{tip}~1") == base
    assert git("show", f"{tip}:agent.txt", cwd=git_repo) == f"created by {run_id}\n"
    assert git("diff", "--name-only", base, tip, cwd=git_repo).split() == ["README.md", "agent.txt"]
    assert head_of(git_repo, "main") == base
    assert worktree_paths(git_repo) == [str(git_repo)]
    assert not Path(record["worktree"]).exists()
    assert case.containers() == []


KEEP_AGENT = r"""
set -eu
mkdir -p sub
echo "new file" > sub/new.txt
echo "agent edit" >> README.md
git add -A
git commit -q -m "agent work"
"""


def _owned_otherwise(top: Path, uid: int) -> list[str]:
    wrong = []
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            path = Path(dirpath, name) if name != "." else Path(dirpath)
            info = path.lstat()
            if (info.st_uid, info.st_gid) != (uid, uid):
                wrong.append(f"{path} ({info.st_uid}:{info.st_gid})")
    return wrong


def _git_as(uid: int, home: Path, *args: str) -> str:
    """git as the repository owner, as that owner would run it (no safe.directory override)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_"))}
    env.update(HOME=str(home), LC_ALL="C")
    proc = subprocess.run(
        ["git", *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        user=uid,
        group=uid,
        extra_groups=[],
    )
    assert proc.returncode == 0, f"git {' '.join(args)} as uid {uid}: {proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("owner", [0, 1000], ids=["root-owned-repo", "user-owned-repo"])
def test_kept_worktree_and_new_branch_belong_to_the_repository_owner(
    owner: int, shared_dir: Path, launcher_roots: list[Path]
) -> None:
    """Runs execute as uid 20000+N; with --keep-worktree their files go back to the repo owner."""
    repo = make_repo(shared_dir / "repo")
    if owner:
        subprocess.run(["chown", "-R", f"{owner}:{owner}", str(repo)], check=True)
    base = head_of(repo)
    root = shared_dir / "case"
    root.mkdir()
    launcher_roots.append(root)
    case = Case(root)

    result = case.cli(
        "run", "--keep-worktree", "--repo", str(repo), "--title", "Keep my files", "--", "sh", "-c", KEEP_AGENT
    )

    assert result.exit_code == 0, result.stderr
    record = case.run_record(run_id_of(result.stderr))
    assert record["uid"] != owner
    assert record["uid"] >= 20000
    worktree = Path(record["worktree"])
    assert worktree.is_dir()
    assert str(worktree) in worktree_paths(repo)
    assert (worktree / "sub" / "new.txt").read_text() == "new file\n"

    # Every file of the kept worktree, and everything in the repository's git dir (the new
    # branch's ref and log, the harvested objects, the worktree's admin folder), is the owner's.
    assert _owned_otherwise(worktree, owner) == []
    assert _owned_otherwise(repo / ".git", owner) == []
    tip = head_of(repo, record["branch"])
    assert tip != base
    assert (repo / ".git" / "refs" / "heads" / record["branch"]).is_file()

    # The owner can use the kept worktree as is: it is on the run's commit, and clean.
    assert _git_as(owner, shared_dir, "-C", str(worktree), "rev-parse", "HEAD").strip() == tip
    assert _git_as(owner, shared_dir, "-C", str(worktree), "log", "-1", "--format=%s").strip() == "agent work"
    tracked = _git_as(owner, shared_dir, "-C", str(worktree), "status", "--porcelain", "--untracked-files=no")
    assert tracked == "", "the kept worktree's index does not match the run's commit"
    untracked = _git_as(owner, shared_dir, "-C", str(worktree), "status", "--porcelain", "--untracked-files=all")
    assert untracked == "", "the kept worktree shows untracked files"

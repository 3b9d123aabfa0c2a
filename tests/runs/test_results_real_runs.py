"""`diff`, `checkout`, `merge`, `apply` and `prune` after real runs (real Docker engine, real git, the CLI
in separate processes): what an agent committed comes back to the owner through host git only.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from runkit import Case, branches, git, head_of, run_id_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The agent commits a file and a repository of its own (a gitlink in its tree).
COMMITS_WITH_A_NESTED_REPO = r"""
set -eu
echo "from the agent" > agent.txt
mkdir nested && cd nested
git init -q && git config user.email a@example.invalid && git config user.name agent
echo inner > inner.txt && git add inner.txt && git commit -qm inner
cd ..
git add agent.txt nested 2>/dev/null
git commit -qm "agent commit"
"""


def _run(case: Case, repo: Path, title: str, script: str) -> str:
    task = case.create_task(repo, title, "--", "sh", "-c", script)
    result = case.cli("run", task, "--network", "none")
    assert result.exit_code == 0, result.stderr
    return run_id_of(result.stderr)


def test_a_runs_commits_come_back_by_diff_checkout_merge_and_prune(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    run = _run(case, git_repo, "Nested", COMMITS_WITH_A_NESTED_REPO)
    branch = case.run_record(run)["branch"]
    tip = head_of(git_repo, branch)

    stat = case.json("diff", run, "--stat")
    assert sorted(f["path"] for f in stat["files"]) == ["agent.txt", "nested"]
    assert stat["base"] == base
    assert stat["tip"] == tip
    assert stat["commits"] == 1
    assert case.ok("diff", run).stdout == git("diff", base, branch, cwd=git_repo)

    path = Path(case.ok("checkout", run).stdout.strip())
    assert (path / "agent.txt").read_text() == "from the agent\n"
    # Checked out by the host from the repository's objects: the agent's repository is a bare
    # gitlink here, an empty folder; its .git (and inner.txt) never reach the owner.
    assert (path / "nested").is_dir()
    assert list((path / "nested").iterdir()) == []
    dotgits = [p for p in path.rglob(".git")]
    assert dotgits == [path / ".git"]
    assert (path / ".git").is_file()
    assert git("rev-parse", "HEAD", cwd=path).strip() == tip
    assert os.stat(path / "agent.txt").st_uid == os.stat(git_repo / ".git").st_uid

    merged = case.json("merge", run)
    assert merged["how"] == "fast-forward"
    assert head_of(git_repo) == tip
    assert (git_repo / "agent.txt").read_text() == "from the agent\n"

    # The checkout is detached: it holds no branch, so prune may delete it.
    pruned = case.json("prune", "--merged")
    assert [(i["run_id"], i["action"]) for i in pruned["items"]] == [(run, "deleted")]
    assert branch not in branches(git_repo)
    assert git("for-each-ref", f"refs/launcher/runs/{run}/", cwd=git_repo) == ""


def test_prune_and_apply_after_an_empty_run_and_an_unmerged_one(case: Case, git_repo: Path) -> None:
    empty = _run(case, git_repo, "Nothing", "true")
    busy = _run(case, git_repo, "Edit", "echo agent >> README.md && git commit -qam 'agent edit'")
    b_empty, b_busy = case.run_record(empty)["branch"], case.run_record(busy)["branch"]

    assert case.json("prune", "--dry-run")["items"][0]["action"] == "would-delete"
    assert set(branches(git_repo)) == {b_empty, b_busy}, "--dry-run deletes nothing"
    report = case.json("prune", "--empty", "--older-than", "0s")
    actions = {i["run_id"]: (i["action"], i["kept_because"]) for i in report["items"]}
    assert actions == {empty: ("deleted", None), busy: ("kept", "unmerged")}
    assert branches(git_repo) == [b_busy]

    (git_repo / "README.md").write_text("mine, uncommitted\n")
    refused = case.cli("apply", busy)
    assert refused.exit_code == 6
    assert "README.md" in refused.stderr
    assert (git_repo / "README.md").read_text() == "mine, uncommitted\n"
    git("checkout", "--", "README.md", cwd=git_repo)
    case.ok("apply", busy)
    assert (git_repo / "README.md").read_text().endswith("agent\n")
    assert git("status", "--porcelain", cwd=git_repo) == "M  README.md\n"
    assert branches(git_repo) == [b_busy], "apply leaves the branch"

"""--sparse: a run checks out only the folders it names; the branch keeps everything else."""

from __future__ import annotations

from pathlib import Path

import pytest
from runkit import Case, facts, make_repo, repo_git, run_id_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

FILES = {
    "README.md": "# top\n",
    "services/api/app.py": "print('api')\n",
    "services/api/deep/x.txt": "x\n",
    "services/web/index.html": "<p>web</p>\n",
    "libs/common/util.py": "def f(): ...\n",
}
AGENT = r"""
echo "FACT files=$(find . -path ./.git -prune -o -path ./.case -prune -o -type f -print | sort | tr '\n' ' ')"
echo "FACT status=$(git status --porcelain | wc -l)"
echo changed >> services/api/app.py
echo new > services/api/new.txt
git add -A && git commit -qm "api work"
"""


def test_a_sparse_run_sees_its_folders_and_commits_without_touching_the_rest(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    result = case.cli(
        "run",
        "--repo",
        str(repo),
        "--title",
        "sparse",
        "--network",
        "none",
        "--sparse",
        "services/api/",
        "--",
        "sh",
        "-c",
        AGENT,
    )
    assert result.exit_code == 0, result.stderr
    seen = facts(result.stdout)
    assert seen["files"].split() == ["./README.md", "./services/api/app.py", "./services/api/deep/x.txt"]
    assert seen["status"] == "0", "files outside the cone are not reported as deleted"
    run = case.run_record(run_id_of(result.stderr))
    assert run["details"]["sparse"] == ["services/api"]
    branch = run["branch"]
    changed = repo_git(repo, "diff", "--name-status", f"main..{branch}").split("\n")
    assert sorted(line for line in changed if line) == ["A\tservices/api/new.txt", "M\tservices/api/app.py"]
    # Everything outside the cone is still on the branch, unchanged.
    assert repo_git(repo, "show", f"{branch}:services/web/index.html") == FILES["services/web/index.html"]
    assert repo_git(repo, "show", f"{branch}:libs/common/util.py") == FILES["libs/common/util.py"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--sparse", "services/nope"], "no such folder"),
        (["--sparse", "../up"], "relative to the repository"),
        (["--sparse", "services/api", "--keep-worktree"], "do not go together"),
    ],
)
def test_bad_sparse_options_are_refused_before_anything_is_made(
    case: Case, tmp_path: Path, options: list[str], message: str
) -> None:
    repo = make_repo(tmp_path / "repo", FILES)
    task = case.create_task(repo, "refused")
    result = case.cli("run", task, "--network", "none", *options, "--", "true")
    assert result.exit_code == 6, result.stderr
    assert message in result.stderr
    assert case.runs() == []

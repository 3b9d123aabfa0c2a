"""What a run sees at CASE_ROOT: the harness's tracked files and its own task files, nothing else.

On 1679cc1 the case root itself was mounted (minus .launcher/ and the run's .git): a run read
another repository's remote URL with its token, its own repository's untracked `.env`, and a
`launcher.toml` database password.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import Case, agent_image, case, facts, git, launcher_roots, make_repo

__all__ = ["agent_image", "case", "launcher_roots"]
pytestmark = pytest.mark.docker

TOKEN = "ghp_example_token_1234567890"
PASSWORD = "s3cr3t-coordinator-password"
PROBE = r"""
cd /case
echo "FACT files=$(find . \( -type f -o -type l \) | sort | tr '\n' ';')"
echo "FACT hello=$(sh scripts/hello.sh)"
if grep -rqs "$TOKEN" /case; then echo "FACT token=found"; else echo "FACT token=absent"; fi
if grep -rqs "$PASSWORD" /case; then echo "FACT password=found"; else echo "FACT password=absent"; fi
"""


def _harness(root: Path) -> Path:
    """A harness checkout at the case root, with the things a careless layout puts under it."""
    (root / "scripts").mkdir()
    (root / "scripts" / "hello.sh").write_text("echo hello from the harness\n")
    (root / "AGENTS.md").write_text("Read the docs.\n")
    # A comment, so the tests' own launcher keeps its SQLite store; as secret as a state_url.
    (root / "launcher.toml").write_text(f"# state_url = postgresql://launcher:{PASSWORD}@db/launcher\n")
    (root / ".gitignore").write_text("*.log\n.launcher/\nrepos/\n")
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "scripts", "AGENTS.md", "launcher.toml", ".gitignore", cwd=root)
    git("commit", "-q", "-m", "harness", cwd=root)
    # After the commit: untracked and ignored files of the harness itself.
    (root / ".env").write_text(f"GITHUB_TOKEN={TOKEN}\n")
    (root / "debug.log").write_text(f"token {TOKEN}\n")
    # Another repository under the root, whose config holds a token in its remote URL.
    other = make_repo(root / "repos" / "other")
    git("remote", "add", "origin", f"https://x-access-token:{TOKEN}@example.invalid/o.git", cwd=other)
    # The run's own repository under the root, with an untracked .env.
    mine = make_repo(root / "repos" / "app")
    (mine / ".env").write_text(f"API_TOKEN={TOKEN}\n")
    return mine


def test_a_run_sees_the_harness_tracked_files_only(case: Case) -> None:
    repo = _harness(case.root)
    case.ok("init")
    task = case.create_task(repo, "Look around")

    result = case.cli("run", task, "--network", "none", "--", "sh", "-c", f"TOKEN={TOKEN} PASSWORD={PASSWORD}\n{PROBE}")

    assert result.exit_code == 0, result.stdout + result.stderr
    seen = facts(result.stdout)
    files = set(seen["files"].rstrip(";").split(";"))
    tasks = {f"./tasks/active/{task}.task.json", f"./tasks/active/{task}.md"}
    assert files == {"./.gitignore", "./AGENTS.md", "./scripts/hello.sh", *tasks}, files
    assert seen["hello"] == "hello from the harness"
    assert seen["token"] == "absent", "no other repository, untracked or ignored file"
    assert seen["password"] == "absent", "launcher.toml is never shown, tracked or not"


def test_a_case_root_that_is_no_git_checkout_shows_only_the_runs_own_task(case: Case, git_repo: Path) -> None:
    (case.root / "notes.txt").write_text(f"token {TOKEN}\n")
    task = case.create_task(git_repo, "Nothing to see")

    result = case.cli("run", task, "--network", "none", "--", "sh", "-c", f"TOKEN={TOKEN} PASSWORD=-\n{PROBE}")

    seen = facts(result.stdout)
    files = set(seen["files"].rstrip(";").split(";"))
    assert files == {f"./tasks/active/{task}.task.json", f"./tasks/active/{task}.md"}, files
    assert seen["token"] == "absent"

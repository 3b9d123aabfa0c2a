"""A profile of launcher.toml's own, end to end: `run --repo R --agent NAME --prompt P` creates the task
(its title from the prompt), the agent gets the prompt read-only through {prompt_file} and verbatim as
one argument through {prompt}, commits it, and the run's record names the agent and the prompt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runkit import Case, git, run_id_of

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# The prompt file must be read-only for the agent, and the prompt one argument however shell-like.
AGENT = r"""
set -e
test ! -w "$1"
echo "changed" >"$1" 2>/dev/null && exit 41
cp "$1" from-file.md
printf '%s' "$2" >from-arg.md
git add from-file.md from-arg.md
git commit -q -m "the prompt, as the agent got it"
echo "agent saw $# arguments, mode=$CATTER_MODE"
"""

TOML = f"""
[agent.catter]
description = "copies its prompt into the repository"
command = ["sh", "-c", {json.dumps(AGENT)}, "catter", "{{prompt_file}}", "{{prompt}}"]
env = {{ CATTER_MODE = "careful" }}
"""

PROMPT = "Fix the failing test\n\nThen: $(touch /tmp/pwned); `id`; \"quoted\" 'too' -- --help\n"


def test_a_profile_of_launcher_toml_gets_the_prompt_as_a_file_and_as_one_argument(case: Case, git_repo: Path) -> None:
    (case.root / "launcher.toml").write_text(TOML)

    result = case.cli("run", "--repo", str(git_repo), "--agent", "catter", "--prompt", PROMPT)

    assert result.exit_code == 0, result.stdout + result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["details"]["agent"] == "catter"
    assert run["details"]["prompt"] == PROMPT
    branch = run["branch"]
    assert git("show", f"{branch}:from-file.md", cwd=git_repo) == PROMPT
    assert git("show", f"{branch}:from-arg.md", cwd=git_repo) == PROMPT
    log = Path(run["details"]["log"]).read_text()
    assert "agent saw 2 arguments, mode=careful" in log
    (task,) = case.json("task", "list")
    assert task["title"] == "Fix the failing test"

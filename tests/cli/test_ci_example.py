"""examples/github-actions.yml: valid YAML of the expected shape, shell steps bash accepts, and the
exit codes it documents are launcher's.

What GitHub itself does with it cannot be run here; what can be checked offline is: it parses,
its jobs chain package -> plan -> run, the run job installs the wheel, builds the images, runs
the task with --push --json, keeps the bundle when the work did not leave, writes the step
summary, groups logs, maps 17 to "claimed elsewhere", and hands the forge token to the host's
environment only (never as a run's --secret).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from launcher.errors import ExitCode

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "github-actions.yml"


@pytest.fixture(scope="module")
def workflow() -> dict[str, Any]:
    yaml = pytest.importorskip("yaml", reason="this machine lacks PyYAML (pip install pyyaml) to parse the example")
    loaded = yaml.safe_load(EXAMPLE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def scripts(job: dict[str, Any]) -> list[str]:
    return [step["run"] for step in job["steps"] if "run" in step]


def test_the_jobs_chain_package_plan_run(workflow: dict[str, Any]) -> None:
    jobs = workflow["jobs"]
    assert list(jobs) == ["package", "plan", "run"]
    assert jobs["plan"]["needs"] == "package"
    assert jobs["run"]["needs"] == "plan"
    assert "launcher matrix --format github" in "\n".join(scripts(jobs["plan"]))
    assert jobs["plan"]["outputs"]["matrix"] == "${{ steps.matrix.outputs.matrix }}"
    strategy = jobs["run"]["strategy"]
    assert strategy["matrix"] == "${{ fromJSON(needs.plan.outputs.matrix) }}"
    assert strategy["fail-fast"] is False
    assert workflow["permissions"]["contents"] == "write"


def test_installs_the_package_and_builds_the_images(workflow: dict[str, Any]) -> None:
    package = "\n".join(scripts(workflow["jobs"]["package"]))
    assert "pip wheel --no-deps --wheel-dir dist ./launcher-src" in package
    for job in ("plan", "run"):
        assert any(re.search(r"pip install .*worktree_launcher-\*\.whl", s) for s in scripts(workflow["jobs"][job]))
    assert any("launcher image build" in s for s in scripts(workflow["jobs"]["run"]))


def test_runs_publishes_or_keeps_the_bundle_and_reports(workflow: dict[str, Any]) -> None:
    run_job = workflow["jobs"]["run"]
    text = "\n".join(scripts(run_job))
    assert 'launcher run "$TASK" $push --json > run.json' in text
    assert "push=--push" in text
    assert "push=--no-push" in text
    assert "GITHUB_STEP_SUMMARY" in text
    assert text.count("::group::") == text.count("::endgroup::") >= 3
    assert "launcher import" in text
    uploads = [s for s in run_job["steps"] if str(s.get("uses", "")).startswith("actions/upload-artifact")]
    assert [u["with"]["path"] for u in uploads] == ["keep/"]
    # The forge token is the host's: the job's environment ([publish] token_env), never a run's secret.
    assert "LAUNCHER_FORGE_TOKEN" in run_job["env"]
    assert "--secret" not in text


def test_the_exit_codes_it_documents_are_launchers(workflow: dict[str, Any]) -> None:
    header = EXAMPLE.read_text().split("\nname:", 1)[0]
    documented = {int(code): what for code, what in re.findall(r"\b(1[0-8])\s+([a-z]+)", header)}
    assert documented[ExitCode.CLAIMED] == "claimed"
    assert documented[ExitCode.PUBLISH_FAILED] == "publish"
    assert documented[ExitCode.RUN_FAILED] == "failed"
    assert documented[ExitCode.RUN_UNHARVESTED] == "unharvested"
    status = "\n".join(scripts(workflow["jobs"]["run"]))
    assert f"{ExitCode.CLAIMED}) echo" in status


def test_every_shell_step_parses(workflow: dict[str, Any], tmp_path: Path) -> None:
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("this machine lacks bash")
    for name, job in workflow["jobs"].items():
        for index, script in enumerate(scripts(job)):
            path = tmp_path / f"{name}-{index}.sh"
            path.write_text(script)
            proc = subprocess.run([bash, "-n", str(path)], capture_output=True, text=True, check=False)
            assert proc.returncode == 0, f"{name} step {index}: {proc.stderr}\n{script}"
            for heredoc in re.findall(r"<<'EOF'[^\n]*\n(.*?)\nEOF", script, flags=re.S):
                compile(heredoc, f"{name}-{index}-summary.py", "exec")


def test_the_build_box_stack_gives_the_forge_token_to_the_workers_only() -> None:
    yaml = pytest.importorskip("yaml", reason="this machine lacks PyYAML (pip install pyyaml) to parse compose.yaml")
    stack = yaml.safe_load((EXAMPLE.parents[1] / "compose.yaml").read_text())
    services = stack["services"]
    assert stack["secrets"]["forge_token"]["file"] == "${LAUNCHER_FORGE_TOKEN_FILE:-/dev/null}"
    assert {name for name, service in services.items() if "secrets" in service} == {"worker"}
    worker = services["worker"]
    assert worker["secrets"] == ["forge_token"]
    # Read from the secret file into the worker's own environment; no value in the compose file.
    script = worker["entrypoint"][2]
    assert "/run/secrets/forge_token" in script
    assert 'exec launcher "$$@"' in script
    assert not any("TOKEN" in str(key) for key in worker.get("environment", {}))
    assert worker["command"][0] == "batch"

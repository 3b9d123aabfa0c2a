"""Runs of today's case's tasks (repo-local .case/, workos/case at 30b1fa1), concurrently, for real.

Each agent does what `ca` does, by case's data contract (running `ca` itself needs bun and npm
packages this machine cannot fetch): finds its repository through $CASE_DATA_DIR's projects.json,
its task through .case/active, edits its task copy, writes a `tested` marker and an event log,
appends to run-log.jsonl and runs `git checkout -b` in the repository projects.json names.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from runkit import Case, wait_for
from today_kit import CREATED_ID, Today, build_today, schema_errors

pytestmark = pytest.mark.docker

AGENT = r"""
set -eu
python3 - <<'PY'
import datetime, json, os, uuid
now = datetime.datetime.now(datetime.timezone.utc).isoformat()
data = os.environ["CASE_DATA_DIR"]
config = json.load(open(os.path.join(data, "config.json")))
repos = json.load(open(os.path.join(data, config["projects"])))["repos"]
assert [r["name"] for r in repos] == ["cli"], repos
repo = repos[0]["path"]
assert repo == os.getcwd(), (repo, os.getcwd())
tid = open(os.path.join(repo, ".case", "active")).read().strip()
assert tid == os.environ["CASE_TASK_ID"], tid
path = os.path.join(repo, ".case", "tasks", "active", tid + ".task.json")
doc = json.load(open(path))
doc["status"] = "implementing"
doc["agents"]["implementer"] = {"started": now, "completed": None, "status": "running"}
doc["tested"] = True
doc["branch"] = "fix/" + tid
with open(path, "w") as f:
    f.write(json.dumps(doc, indent=2) + "\n")
scope = os.path.join(repo, ".case", tid)
os.makedirs(os.path.join(scope, "events"), exist_ok=True)
with open(os.path.join(scope, "tested"), "w") as f:
    f.write(f"timestamp: {now}\noutput_hash: {'0' * 64}\npass_indicators: 5\nfail_indicators: 0\n")
run = str(uuid.uuid4())
with open(os.path.join(scope, "events", f"run-{run}.jsonl"), "w") as f:
    for seq, event in enumerate(
        [{"type": "pipeline_start", "taskId": tid, "profile": "standard", "plan": {}},
         {"type": "pipeline_end", "outcome": "completed", "durationMs": 5}], start=1):
        f.write(json.dumps({**event, "ts": now, "sequence": seq, "runId": run}) + "\n")
with open(os.path.join(repo, ".case", "run-log.jsonl"), "a") as f:
    f.write(json.dumps({"runId": run, "date": now[:10], "task": tid, "repo": "cli", "outcome": "completed"}) + "\n")
PY
git checkout -q -b "fix/$CASE_TASK_ID"
echo "$CASE_TASK_ID" > "work-$CASE_TASK_ID.txt"
git add -A && git commit -qm "$CASE_TASK_ID"
"""


@pytest.fixture
def today(shared_dir: Path, launcher_roots: list[Path]) -> Iterator[tuple[Today, Case]]:
    layout = build_today(shared_dir)
    launcher_roots.append(layout.root.resolve())
    driver = Case(layout.root)
    try:
        yield layout, driver
    finally:
        driver.kill_strays()


def git_out(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def test_eight_concurrent_runs_each_get_their_own_case_state_and_only_it_comes_back(
    today: tuple[Today, Case],
) -> None:
    layout, case = today
    case.ok("init")
    tasks = [case.json("task", "create", "--repo", "cli", "--title", f"Task {i}")["id"] for i in range(8)]
    active_before = (layout.case_dir / "active").read_bytes()
    run_log_before = (layout.case_dir / "run-log.jsonl").read_bytes()
    head_before = git_out(layout.repo, "rev-parse", "HEAD")
    branches_before = git_out(layout.repo, "for-each-ref", "--format=%(refname)", "refs/heads")
    untouched = {k: v for k, v in layout.digests().items() if k.startswith(f"{CREATED_ID}/")}

    procs = [case.popen("run", task, "--network", "none", "--", "sh", "-c", AGENT) for task in tasks]
    for proc in procs:
        proc.wait(timeout=600)

    assert [p.returncode for p in procs] == [0] * len(procs)
    for task in tasks:
        doc = json.loads(layout.task_file(task).read_text())
        assert doc["status"] == "implementing"
        assert doc["tested"] is True
        assert doc["branch"] == f"fix/{task}"
        assert doc["agents"]["implementer"]["status"] == "running"
        assert schema_errors(doc) == []
        shown = case.json("task", "show", task)
        assert shown["doc"] == doc
        changes = shown["runs"][-1]["details"]["task_changes"]
        assert changes["refused"] == [], changes
        assert changes["not_carried"] == [], changes
        [events] = list((layout.case_dir / task / "events").iterdir())
        lines = [json.loads(line) for line in events.read_text().splitlines()]
        assert [e["type"] for e in lines] == ["pipeline_start", "pipeline_end"]
        assert lines[0]["taskId"] == task
        assert f"{task}/events/{events.name}" in changes["carried_back"]
        assert "pass_indicators: 5" in (layout.case_dir / task / "tested").read_text()
        # The run's own files are kept with it as well, carried back or not.
        run_id = shown["runs"][-1]["id"]
        kept = layout.root / ".launcher" / "runs" / run_id / ".case" / task / "events" / events.name
        assert kept.read_bytes() == events.read_bytes()
    run_log = (layout.case_dir / "run-log.jsonl").read_bytes()
    assert run_log.startswith(run_log_before)
    added = [json.loads(line) for line in run_log[len(run_log_before) :].splitlines()]
    assert sorted(entry["task"] for entry in added) == sorted(tasks), "each run's line, exactly once"
    assert (layout.case_dir / "active").read_bytes() == active_before
    assert {k: v for k, v in layout.digests().items() if k.startswith(f"{CREATED_ID}/")} == untouched
    # `git checkout -b` ran in each run's worktree, never in the main checkout.
    assert git_out(layout.repo, "rev-parse", "HEAD") == head_before
    assert git_out(layout.repo, "symbolic-ref", "HEAD").strip() == "refs/heads/main"
    new_heads = set(git_out(layout.repo, "for-each-ref", "--format=%(refname)", "refs/heads").split()) - set(
        branches_before.split()
    )
    assert not any(ref.startswith("refs/heads/fix/") for ref in new_heads), new_heads
    assert git_out(layout.repo, "status", "--porcelain") == ""
    wait_for(lambda: not case.containers(), timeout=30, what="no containers left")


def test_a_run_that_breaks_the_rules_changes_nothing_of_the_main_checkout(today: tuple[Today, Case]) -> None:
    layout, case = today
    case.ok("init")
    task = case.json("task", "create", "--repo", "cli", "--title", "Cheats")["id"]
    cheat = r"""
    set -eu
    T=".case/tasks/active/$CASE_TASK_ID.task.json"
    python3 -c "import json,sys; d=json.load(open(sys.argv[1])); d.update(status='merged', tested=True, \
    launcherNote='mine'); json.dump(d, open(sys.argv[1],'w'))" "$T"
    mkdir -p ".case/$CASE_TASK_ID/events"
    echo 'not json' > ".case/$CASE_TASK_ID/events/run-bad.jsonl"
    ln -s /etc/passwd ".case/$CASE_TASK_ID/events/run-link.jsonl"
    echo '["a list"]' >> .case/run-log.jsonl
    echo other > .case/active
    """
    before = layout.digests()

    case.ok("run", task, "--network", "none", "--", "sh", "-c", cheat)

    shown = case.json("task", "show", task)
    assert shown["status"] == "active"
    assert shown["doc"]["tested"] is False
    changes = shown["runs"][-1]["details"]["task_changes"]
    refused = " | ".join(changes["refused"])
    assert "illegal transition active -> merged" in refused
    assert "tested: set to true without" in refused
    assert "launcherNote: new field" in refused
    not_carried = " | ".join(changes["not_carried"])
    assert "run-bad.jsonl: line 1 is not JSON" in not_carried
    assert "run-log.jsonl: line 1 is not a JSON object" in not_carried
    assert changes["carried_back"] == []
    after = layout.digests()
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {f"tasks/active/{task}.md"} - set(before)
    assert schema_errors(json.loads(layout.task_file(task).read_text())) == []


def _not_owned_by(top: Path, uid: int) -> list[str]:
    return [str(p) for p in [top, *top.rglob("*")] if p.lstat().st_uid != uid]


def test_in_a_user_owned_repository_what_the_host_writes_in_case_is_the_owner_s(
    today: tuple[Today, Case],
) -> None:
    layout, case = today
    owner = 1000
    subprocess.run(["chown", "-R", f"{owner}:{owner}", str(layout.repo)], check=True)
    case.ok("init")
    task = case.json("task", "create", "--repo", "cli", "--title", "Mine")["id"]

    case.ok("run", task, "--network", "none", "--", "sh", "-c", AGENT)

    changes = case.json("task", "show", task)["runs"][-1]["details"]["task_changes"]
    assert any(path.startswith(f"{task}/events/run-") for path in changes["carried_back"]), changes
    assert f"{task}/tested" in changes["carried_back"]
    assert _not_owned_by(layout.case_dir, owner) == []
    assert json.loads(layout.task_file(task).read_text())["status"] == "implementing"


def test_a_task_description_that_is_a_symlink_in_the_repository_is_never_copied_into_a_run(
    today: tuple[Today, Case], tmp_path: Path
) -> None:
    layout, case = today
    case.ok("init")
    task = case.json("task", "create", "--repo", "cli", "--title", "Linked brief")["id"]
    # What a repository's commits can hold: its .case/tasks/…/TASK.md pointing at a host file.
    secret = tmp_path / "host-only-key"
    secret.write_text("HOST-ONLY-SECRET\n")
    md = layout.task_file(task).with_name(f"{task}.md")
    md.unlink()
    md.symlink_to(secret)

    result = case.cli("run", task, "--network", "none", "--", "sh", "-c", "cat .case/tasks/active/*.md; exit 0")

    assert result.exit_code == 6, (result.stdout, result.stderr)  # refused before anything was made
    assert "symbolic link" in result.stderr
    assert str(md) in result.stderr
    assert "HOST-ONLY-SECRET" not in result.stdout + result.stderr
    assert case.runs() == []
    assert case.containers() == []

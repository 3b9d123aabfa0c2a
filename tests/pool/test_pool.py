"""Warm pools against the real Docker engine and real git.

A slot is a worktree checked out ahead of time, a started container blocked until a run takes
it, and (for proxied runs) a network the egress proxy already serves. What these tests hold
launcher to: a run that takes a slot sees exactly what a run made from scratch sees; a slot is
never handed to two runs; taking one resets the worktree to the run's base rewriting only the
files that differ; and whatever a dead warmer, a dead container or a dead run leaves, `gc`
removes.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import containers_of, networks_of
from runkit import Case, facts, head_of, make_repo, repo_git, run_id_of, worktree_paths

pytestmark = [pytest.mark.docker, pytest.mark.slow]

READY_LINE = "launcher-pool: ready"
FACTS_AGENT = r"""
echo "FACT run=$CASE_RUN_ID"
echo "FACT task=$CASE_TASK_ID"
echo "FACT branch=$(git rev-parse --abbrev-ref HEAD)"
echo "FACT head=$(git rev-parse HEAD)"
echo "FACT branches=$(git for-each-ref --format='%(refname:short)' refs/heads | sort | tr '\n' ' ')"
echo "FACT uid=$(id -u)"
echo "FACT status=$(git status --porcelain | wc -l)"
echo "FACT scope=$(cat .case/active)"
echo "FACT secret=$(printf %s "$MY_SECRET" | sha256sum | cut -c1-16)"
echo "FACT argv=$#:$1"
echo work > work.txt && git add work.txt && git commit -qm "agent work"
"""


def warm(case: Case, repo: Path, size: int, *options: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = case.ok("pool", "warm", "--repo", str(repo), "--size", str(size), "--json", *options, env=env)
    return dict(json.loads(result.stdout))


def ready_slots(case: Case) -> list[dict[str, Any]]:
    return [s for s in case.json("pool", "ls") if s["state"] == "ready"]


def pool_leftovers(root: Path) -> list[str]:
    """Everything a slot is made of that is still on disk: slot folders, pool worktrees."""
    found = []
    for sub in ("ready", "warming", "discard"):
        folder = root / ".launcher" / "pool" / sub
        if folder.is_dir():
            found += [str(p) for p in folder.iterdir()]
    pool_worktrees = root / ".launcher" / "worktrees" / ".pool"
    if pool_worktrees.is_dir():
        found += [str(p) for p in pool_worktrees.iterdir()]
    return found


def drain_and_check(case: Case) -> None:
    case.ok("pool", "drain")
    case.ok("gc")
    assert pool_leftovers(case.root) == []
    assert not containers_of(case.root, include_proxy=True)
    assert not networks_of(case.root)


def test_a_run_takes_a_ready_slot_and_sees_what_a_fresh_run_sees(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    report = warm(case, repo, 2, "--network", "none")
    assert report["ready_after"] == 2
    assert len(report["warmed"]) == 2
    slots = ready_slots(case)
    assert {s["id"] for s in slots} == set(report["warmed"])
    pool_containers = [c for c in containers_of(case.root) if c.labels.get("launcher.kind") == "pool"]
    assert sorted(c.labels["launcher.pool-slot"] for c in pool_containers) == sorted(report["warmed"])
    assert all(c.status == "running" for c in pool_containers)
    # Topping up to a size already reached makes nothing.
    assert warm(case, repo, 2, "--network", "none")["warmed"] == []

    result = case.cli(
        "run",
        "--repo",
        str(repo),
        "--title",
        "pooled",
        "--network",
        "none",
        "--secret",
        "MY_SECRET",
        "--",
        "sh",
        "-c",
        FACTS_AGENT,
        "agent",
        "first arg; $(not expanded)",
        env={"MY_SECRET": "s3cr3t-value"},
    )
    assert result.exit_code == 0, result.stderr
    run = case.run_record(run_id_of(result.stderr))
    slot = next(s for s in slots if s["id"] == run["details"]["pool_slot"])
    seen = facts(result.stdout)
    assert seen["run"] == run["id"]
    assert seen["task"] == run["task_id"]
    assert seen["branch"] == run["branch"]
    assert seen["head"] == head_of(repo, "main")
    assert seen["branches"].split() == sorted([run["branch"], "main"]), "the slot's warm-up branch is gone"
    assert seen["uid"] == str(slot["uid"]) == str(run["uid"])
    assert seen["status"] == "0", "the worktree the run got is a clean checkout"
    assert seen["scope"] == run["task_id"]
    assert seen["secret"] == hashlib.sha256(b"s3cr3t-value").hexdigest()[:16]
    assert seen["argv"] == "1:first arg; $(not expanded)"
    assert READY_LINE not in result.stdout
    assert READY_LINE not in Path(run["log"]).read_text()
    # The commit is on the run's branch; the slot's worktree and folders are gone with the run.
    assert repo_git(repo, "log", "-1", "--format=%s", run["branch"]).strip() == "agent work"
    assert not Path(run["worktree"]).exists()
    assert str(Path(run["worktree"])) not in worktree_paths(repo)
    assert [s["id"] for s in ready_slots(case)] == [s["id"] for s in slots if s["id"] != slot["id"]]
    assert not [c for c in containers_of(case.root) if c.labels.get("launcher.pool-slot") == slot["id"]]

    # --no-pool leaves the remaining slot alone.
    result = case.cli("run", run["task_id"], "--network", "none", "--no-pool", "--", "true")
    assert result.exit_code == 0, result.stderr
    assert "pool_slot" not in case.run_record(run_id_of(result.stderr))["details"]
    assert len(ready_slots(case)) == 1
    drain_and_check(case)


def test_taking_a_slot_resets_to_the_runs_base_rewriting_only_changed_files(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo", {"same.txt": "unchanged\n", "moved.txt": "old\n", "gone.txt": "bye\n"})
    warmed_at = head_of(repo)
    (slot_id,) = warm(case, repo, 1, "--network", "none")["warmed"]
    slot_tree = case.root / ".launcher" / "worktrees" / ".pool" / slot_id
    before = (slot_tree / "same.txt").stat()
    # main moves on after the slot was warmed.
    (repo / "moved.txt").write_text("new\n")
    (repo / "added.txt").write_text("added\n")
    repo_git(repo, "rm", "-q", "gone.txt")
    repo_git(repo, "add", "-A")
    repo_git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "move on")
    assert head_of(repo) != warmed_at

    agent = (
        'echo "FACT same=$(stat -c %i:%Y same.txt)"; echo "FACT moved=$(cat moved.txt)";'
        ' echo "FACT added=$(cat added.txt)"; echo "FACT gone=$(test -e gone.txt && echo yes || echo no)";'
        ' echo "FACT status=$(git status --porcelain | wc -l)"; echo "FACT head=$(git rev-parse HEAD)"'
    )
    result = case.cli("run", "--repo", str(repo), "--title", "reset", "--network", "none", "--", "sh", "-c", agent)
    assert result.exit_code == 0, result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["details"]["pool_slot"] == slot_id
    seen = facts(result.stdout)
    assert seen["head"] == head_of(repo)
    assert (seen["moved"], seen["added"], seen["gone"], seen["status"]) == ("new", "added", "no", "0")
    # The file both commits share was not rewritten: same inode, same modification time.
    assert seen["same"] == f"{before.st_ino}:{int(before.st_mtime)}"
    drain_and_check(case)


def test_concurrent_runs_never_share_a_slot(case: Case, tmp_path: Path) -> None:
    """More runs than slots, all at once: runs that settle (and prune worktrees) while others
    take slots, so a slot's move to its run must never lose its worktree record."""
    repo = make_repo(tmp_path / "repo")
    warmed = set(warm(case, repo, 6, "--network", "none")["warmed"])
    tasks = [case.create_task(repo, f"race {n}") for n in range(9)]
    agent = 'echo "$CASE_RUN_ID" > who.txt && git add who.txt && git commit -qm "$CASE_RUN_ID"'
    procs = [
        case.popen("run", task, "--network", "none", "--json", "--", "sh", "-c", agent, stdout=subprocess.PIPE)
        for task in tasks
    ]
    records = []
    for proc in procs:
        out, _ = proc.communicate(timeout=300)
        records.append(json.loads(out))
        assert proc.returncode == 0, records[-1].get("details", {}).get("errors")
    taken = [r["details"].get("pool_slot") for r in records if r["details"].get("pool_slot")]
    assert sorted(taken) == sorted(warmed), "each slot served exactly one run; the others started from scratch"
    for record in records:
        assert record["state"] == "exited"
        assert repo_git(repo, "log", "-1", "--format=%s", record["branch"]).strip() == record["id"]
    assert ready_slots(case) == []
    assert worktree_paths(repo) == [str(repo)]
    drain_and_check(case)


def test_a_proxied_slot_reaches_nothing_until_a_run_brings_its_policy(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (slot_id,) = warm(case, repo, 1)["warmed"]
    (slot,) = ready_slots(case)
    assert slot["network"] == "proxied"
    (network,) = networks_of(case.root)
    assert network.attrs["Labels"]["launcher.pool-slot"] == slot_id
    (container,) = [c for c in containers_of(case.root) if c.labels.get("launcher.pool-slot") == slot_id]
    proxy = f"http://{network.attrs['Labels']['launcher.proxy-ip']}:3128"
    # Before any run took the slot, the proxy has no policy for its network: everything is refused.
    probe = container.exec_run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, "http://example.com/"]
    )
    assert probe.output.decode().strip() == "403"

    agent = (
        'echo "FACT code=$(curl -sS -o /dev/null -w %{http_code} http://denied.invalid/)";'
        ' echo "FACT proxy=$HTTP_PROXY"'
    )
    result = case.cli(
        "run", "--repo", str(repo), "--title", "net", "--allow", "allowed.invalid", "--", "sh", "-c", agent
    )
    assert result.exit_code == 0, result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["details"]["pool_slot"] == slot_id
    assert facts(result.stdout)["code"] == "403"
    assert facts(result.stdout)["proxy"] == proxy
    assert run["egress"]["denied"] == ["denied.invalid:80"]
    # The run's network (the slot's) and its lease went with the run; gc finds nothing to do.
    assert not networks_of(case.root)
    gc = case.json("gc")
    assert [a["kind"] for a in gc["actions"]] in ([], ["remove-egress-proxy"])
    drain_and_check(case)


@pytest.mark.parametrize("point", ["pool:after-network", "pool:after-start"])
def test_gc_discards_a_slot_whose_warmer_was_killed(case: Case, tmp_path: Path, point: str) -> None:
    repo = make_repo(tmp_path / "repo")
    killed = case.cli("pool", "warm", "--repo", str(repo), "--size", "1", env={"LAUNCHER_TEST_FAULTS": f"kill@{point}"})
    assert killed.exit_code == -signal.SIGKILL, killed
    assert containers_of(case.root) or point == "pool:after-network"
    assert networks_of(case.root)
    assert case.json("pool", "ls") == [], "a slot whose warmer died is not offered"

    report = case.json("gc")
    assert "discard-pool-slot" in [a["kind"] for a in report["actions"]]
    assert not [a for a in report["actions"] if a["error"]], report
    assert pool_leftovers(case.root) == []
    assert worktree_paths(repo) == [str(repo)]
    assert not containers_of(case.root, include_proxy=True)
    assert not networks_of(case.root)
    assert case.json("gc")["actions"] == []


def test_a_slot_whose_container_died_is_skipped_then_collected(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    dead, alive = warm(case, repo, 2, "--network", "none")["warmed"]
    for container in containers_of(case.root):
        if container.labels.get("launcher.pool-slot") == dead:
            container.remove(force=True)
    result = case.cli("run", "--repo", str(repo), "--title", "after a crash", "--network", "none", "--", "true")
    assert result.exit_code == 0, result.stderr
    # Either the live slot served, or the dead one was found dead and discarded on the way.
    assert case.run_record(run_id_of(result.stderr))["details"].get("pool_slot") in (alive, None)
    report = case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    assert dead not in {s["id"] for s in case.json("pool", "ls")}
    assert not (case.root / ".launcher" / "worktrees" / ".pool" / dead).exists()
    drain_and_check(case)


def test_gc_keeps_ready_slots_and_a_run_killed_after_its_claim_is_settled(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    warm(case, repo, 2)
    assert case.json("gc")["actions"] == [], "ready slots are in service"
    assert len(ready_slots(case)) == 2

    killed = case.cli(
        "run",
        "--repo",
        str(repo),
        "--title",
        "killed",
        "--",
        "true",
        env={"LAUNCHER_TEST_FAULTS": "kill@after:pool-claim"},
    )
    assert killed.exit_code == -signal.SIGKILL, killed
    report = case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    (run,) = case.runs()
    assert run["state"] == "lost"
    assert len(ready_slots(case)) == 1, "the other slot is untouched"
    assert not (case.root / ".launcher" / "sandboxes" / run["id"]).exists()
    remaining = {c.labels.get("launcher.pool-slot") for c in containers_of(case.root)}
    assert remaining == {ready_slots(case)[0]["id"]}
    assert len(networks_of(case.root)) == 1
    drain_and_check(case)


def test_slots_for_a_repository_owned_by_an_unprivileged_user(shared_dir: Path, launcher_roots: list[Path]) -> None:
    repo = make_repo(shared_dir / "repo")
    subprocess.run(["chown", "-R", "1000:1000", str(repo)], check=True)
    root = shared_dir / "case"
    root.mkdir()
    launcher_roots.append(root)
    case = Case(root)
    warm(case, repo, 1, "--network", "none")
    agent = 'echo "FACT uid=$(id -u)"; echo w > w && git add w && git commit -qm w'
    result = case.cli(
        "run",
        "--repo",
        str(repo),
        "--title",
        "user repo",
        "--network",
        "none",
        "--keep-worktree",
        "--",
        "sh",
        "-c",
        agent,
    )
    assert result.exit_code == 0, result.stderr
    run = case.run_record(run_id_of(result.stderr))
    assert run["details"].get("pool_slot")
    assert int(facts(result.stdout)["uid"]) not in (0, 1000)
    # The new branch and every object the harvest wrote belong to the repository's owner.
    wrong = [p for p in (repo / ".git").rglob("*") if os.lstat(p).st_uid != 1000]
    assert wrong == []
    assert repo_git(repo, "log", "-1", "--format=%s", run["branch"]).strip() == "w"
    # The kept worktree (a slot's, moved to the run's path) is the owner's, on the run's branch, clean.
    worktree = Path(run["worktree"])
    assert [p for p in worktree.rglob("*") if os.lstat(p).st_uid != 1000] == []
    as_owner = {"user": 1000, "group": 1000, "extra_groups": [], "cwd": "/", "capture_output": True, "text": True}
    env = {"PATH": os.environ["PATH"], "HOME": str(shared_dir)}
    head = subprocess.run(["git", "-C", str(worktree), "symbolic-ref", "HEAD"], env=env, check=True, **as_owner)
    assert head.stdout.strip() == f"refs/heads/{run['branch']}"
    status = subprocess.run(["git", "-C", str(worktree), "status", "--porcelain"], env=env, check=True, **as_owner)
    assert status.stdout == ""
    drain_and_check(case)


def test_two_warmers_at_once_top_up_to_the_size_not_beyond(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    warmers = [
        case.popen(
            "pool", "warm", "--repo", str(repo), "--size", "2", "--network", "none", "--json", stdout=subprocess.PIPE
        )
        for _ in range(2)
    ]
    warmed = []
    for proc in warmers:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0
        warmed += json.loads(out)["warmed"]
    assert len(warmed) == 2
    assert sorted(s["id"] for s in ready_slots(case)) == sorted(warmed)
    assert len({s["uid"] for s in ready_slots(case)}) == 2, "every slot has a uid of its own"
    drain_and_check(case)


def test_a_slot_made_for_other_limits_is_never_taken_and_the_next_warm_replaces_it(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (old,) = warm(case, repo, 1, "--network", "none")["warmed"]
    (case.root / "launcher.toml").write_text('[run]\nmemory = "1g"\n')
    # The slot's container has a 2g limit: a run under the new limit must not take it.
    result = case.cli("run", "--repo", str(repo), "--title", "new limits", "--network", "none", "--", "true")
    assert result.exit_code == 0, result.stderr
    assert "pool_slot" not in case.run_record(run_id_of(result.stderr))["details"]
    assert [s["id"] for s in ready_slots(case)] == [old]

    report = warm(case, repo, 1, "--network", "none")
    assert report["superseded"] == [old]
    assert len(report["warmed"]) == 1
    assert [s["id"] for s in ready_slots(case)] == report["warmed"]
    assert not [c for c in containers_of(case.root) if c.labels.get("launcher.pool-slot") == old]
    drain_and_check(case)

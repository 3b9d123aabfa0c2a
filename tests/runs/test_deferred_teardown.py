"""`launcher run` returns its result before the run is taken apart ([run] defer_teardown).

The agent's work is harvested and the ending recorded first; the container, the run's network
and its folders are removed after, by a child the launcher forks as it exits. These tests kill
that child before it starts (the test-only fault hook): the result stands, everything it would
have removed is still there, the next run is not disturbed by any of it, and `launcher gc`
removes the rest, leaving nothing. Real Docker engine, real git, the real CLI.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from helpers import docker_client, networks_of
from runkit import Case, make_repo, repo_git, worktree_paths

pytestmark = [pytest.mark.docker]

AGENT = 'echo work > work.txt && git add work.txt && git commit -qm "agent work"'
KILL_TEARDOWN = {"LAUNCHER_TEST_FAULTS": "kill@before:teardown"}


def leases(root: Path) -> dict[int, str]:
    with sqlite3.connect(root / ".launcher" / "state.db") as db:
        return {int(slot): str(holder) for slot, holder in db.execute("SELECT slot, run_id FROM subnet_leases")}


def engine_objects(root: Path) -> tuple[list[str], list[str]]:
    """The run containers and networks of ``root`` now, without waiting for teardowns."""
    client = docker_client()
    try:
        label = {"label": f"launcher.root={root}"}
        containers = [
            c.labels.get("launcher.run-id", "")
            for c in client.containers.list(all=True, filters=label)
            if c.labels.get("launcher.kind") != "egress-proxy"
        ]
        networks = [n.attrs["Labels"].get("launcher.run-id", "") for n in client.networks.list(filters=label)]
        return containers, networks
    finally:
        client.close()


def folders(root: Path) -> dict[str, list[str]]:
    found = {}
    for name in ("worktrees", "sandboxes"):
        top = root / ".launcher" / name
        found[name] = sorted(p.name for p in top.iterdir()) if top.is_dir() else []
    return found


def test_the_result_stands_without_its_teardown_and_gc_removes_what_is_left(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    root = case.root
    task = case.create_task(repo, "deferred", "--", "sh", "-c", AGENT)

    done = case.cli("run", "--network", "allowlist", task, "--json", env=KILL_TEARDOWN)
    assert done.exit_code == 0, done
    first = json.loads(done.stdout)
    run_id = first["id"]
    assert first["state"] == "exited", first
    assert not first["details"].get("errors"), first
    assert repo_git(repo, "log", "-1", "--format=%s", f"refs/heads/{first['branch']}").strip() == "agent work"
    # The launcher exited with the result while nothing had been removed yet: its teardown
    # child died before its first step.
    containers, networks = engine_objects(root)
    assert containers == [run_id], containers
    assert networks == [run_id], networks
    assert list(leases(root).values()) == [run_id]
    left = folders(root)
    assert left["sandboxes"] == [run_id], left
    assert [name.startswith(f".trash-{run_id}-") for name in left["worktrees"]] == [True], left
    assert worktree_paths(repo) == [str(repo)], "the worktree is out of the repository before the result"

    # The next run meets none of it: its own container, network, subnet, worktree.
    second = case.json("run", "--network", "allowlist", case.create_task(repo, "next", "--", "sh", "-c", AGENT))
    assert second["state"] == "exited", second
    assert second["details"]["egress"]["network"] != first["details"]["egress"]["network"]
    assert second["details"]["egress"]["subnet"] != first["details"]["egress"]["subnet"]
    assert engine_objects(root) == ([run_id], [run_id]), "the second run's teardown removed all of its own"
    assert list(leases(root).values()) == [run_id]

    report = case.json("gc")
    assert not [a for a in report["actions"] if a["error"]], report
    kinds = sorted(a["kind"] for a in report["actions"] if a["target"] != "egress proxy")
    assert kinds == ["release-subnet", "remove-container", "remove-network", "remove-sandbox", "remove-worktree"], kinds
    assert engine_objects(root) == ([], [])
    assert networks_of(root) == []
    assert leases(root) == {}
    assert folders(root) == {"worktrees": [], "sandboxes": []}
    assert [r["state"] for r in case.runs()] == ["exited", "exited"], "gc leaves settled results as they are"
    assert case.json("gc")["actions"] == []


def test_a_run_leaves_nothing_once_its_teardown_is_done(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    record = case.json("run", "--network", "allowlist", case.create_task(repo, "plain", "--", "sh", "-c", AGENT))
    assert record["state"] == "exited", record
    # case.json waited for the teardown (helpers.wait_teardowns); nothing is left for gc.
    assert engine_objects(case.root) == ([], [])
    assert leases(case.root) == {}
    assert folders(case.root) == {"worktrees": [], "sandboxes": []}
    assert not list((case.root / ".launcher" / "teardown").glob("*.lock"))
    assert not case.run_record(record["id"])["details"].get("errors")
    report = case.json("gc", "--dry-run")
    assert [a for a in report["actions"] if a["target"] != "egress proxy"] == [], report


def test_without_deferral_the_run_is_taken_apart_before_launcher_exits(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    case.ok("init")
    config = case.root / "launcher.toml"
    config.write_text(config.read_text().replace("\n[run]\n", "\n[run]\ndefer_teardown = false\n", 1))
    task = case.create_task(repo, "inline", "--", "sh", "-c", AGENT)
    # The kill fault would kill the launcher itself now: it does the teardown before it exits.
    done = case.cli("run", "--network", "allowlist", task, "--json", settled=False)
    assert done.exit_code == 0, done
    assert engine_objects(case.root) == ([], []), "removed before the launcher exited"
    assert folders(case.root) == {"worktrees": [], "sandboxes": []}
    assert leases(case.root) == {}

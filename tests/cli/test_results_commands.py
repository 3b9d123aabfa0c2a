"""`launcher diff|merge|apply|checkout|prune` on real repositories, with run records made directly.

Each "run" is a real branch in a real repository and a run record in the case root's real
coordinator, as a launcher run leaves them (``base_sha``, ``base_branch``, ``repo``); the CLI
runs in-process through its real entry point. tests/runs/test_results_real_runs.py does the
same after real Docker runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import CliResult, git, invoke, make_repo, repo_git

from launcher.cli.app_context import Application
from launcher.core.transitions import RunState
from launcher.models import NewRun, utcnow

pytestmark = pytest.mark.slow


@dataclass
class World:
    root: Path
    repo: Path

    def cli(self, *args: str) -> CliResult:
        return invoke(["--root", str(self.root), *args])

    def ok(self, *args: str) -> CliResult:
        result = self.cli(*args)
        assert result.exit_code == 0, f"{args} -> {result.exit_code}\n{result.stdout}\n{result.stderr}"
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def run(
        self,
        files: dict[str, str | None] | None = None,
        *,
        state: RunState = RunState.EXITED,
        base: str = "main",
        ended_days_ago: float = 0,
    ) -> str:
        """A run of a new task: its branch from ``base`` with one commit of ``files`` (None: deleted)."""
        task = self.json("task", "create", "--repo", str(self.repo), "--title", "Results back")["id"]
        app = Application(str(self.root), None)
        try:
            store = app.store
            run = store.create_run(
                NewRun(task_id=task, image=None, owner=None, worktrees_dir=str(self.root / ".launcher/worktrees"))
            )
            base_sha = head(self.repo, base)
            git("branch", run.branch, base_sha, cwd=self.repo)
            if files:
                commit_on(self.repo, run.branch, files)
            ended = utcnow()
            if ended_days_ago:
                from datetime import timedelta

                ended -= timedelta(days=ended_days_ago)
            store.update_run(
                run.id,
                state=state,
                ended_at=None if state in {RunState.RUNNING} else ended,
                details={"base_sha": base_sha, "base_branch": base, "repo": str(self.repo)},
            )
            return run.id
        finally:
            app.close()

    def record(self, run_id: str) -> dict[str, Any]:
        return next(r for r in self.json("ps", "--all") if r["id"] == run_id)


def head(repo: Path, ref: str = "HEAD") -> str:
    return git("rev-parse", "--verify", f"{ref}^{{commit}}", cwd=repo).strip()


def commit_on(repo: Path, branch: str, files: dict[str, str | None], message: str = "agent work") -> str:
    """A commit on ``branch`` made with plumbing: the main checkout is left as it is."""
    index = repo / ".git" / "test-index"
    env = {**os.environ, "GIT_INDEX_FILE": str(index)}

    def plumb(*args: str, data: bytes | None = None) -> str:
        return (
            subprocess.run(["git", *args], cwd=repo, env=env, input=data, capture_output=True, check=True)
            .stdout.decode()
            .strip()
        )

    plumb("read-tree", branch)
    for name, text in files.items():
        if text is None:
            plumb("update-index", "--force-remove", name)
        else:
            blob = plumb("hash-object", "-w", "--stdin", data=text.encode())
            plumb("update-index", "--add", "--cacheinfo", f"100644,{blob},{name}")
    tree = plumb("write-tree")
    index.unlink()
    sha = git("commit-tree", tree, "-p", branch, "-m", message, cwd=repo).strip()
    git("update-ref", f"refs/heads/{branch}", sha, cwd=repo)
    return sha


def status(repo: Path) -> str:
    return git("status", "--porcelain", cwd=repo)


@pytest.fixture
def world(case_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> World:
    for name in [k for k in os.environ if k.startswith(("GIT_", "LAUNCHER_", "CASE_"))]:
        monkeypatch.delenv(name)
    repo = make_repo(tmp_path / "demo", {"README.md": "# demo\nline two\n", "src/app.py": "print('hello')\n"})
    git("config", "user.name", "Repo Owner", cwd=repo)
    git("config", "user.email", "owner@example.invalid", cwd=repo)
    return World(case_root, repo)


# -- diff ------------------------------------------------------------------------------------


def test_diff_prints_base_to_branch_exactly_as_git_does(world: World) -> None:
    run = world.run({"README.md": "# demo\nline two\nagent line\n", "new.txt": "new\n"})
    branch = world.record(run)["branch"]
    expected = git("diff", "main", branch, cwd=world.repo)

    assert world.ok("diff", run).stdout == expected
    stat = world.ok("diff", run, "--stat").stdout
    assert "README.md" in stat
    assert "new.txt" in stat
    assert "2 files changed" in stat
    data = world.json("diff", run, "--stat")
    assert [(f["path"], f["insertions"], f["deletions"]) for f in data["files"]] == [
        ("README.md", 1, 0),
        ("new.txt", 1, 0),
    ]
    assert data["commits"] == 1
    assert data["tip"] == head(world.repo, branch)
    assert data["patch"] is None


def test_diff_runs_no_textconv_or_external_diff_from_the_repository(world: World, tmp_path: Path) -> None:
    marker = tmp_path / "driver-ran"
    git("config", "diff.external", f"sh -c 'touch {marker}'", cwd=world.repo)
    git("config", "diff.evil.textconv", f"sh -c 'touch {marker}; cat'", cwd=world.repo)
    run = world.run({".gitattributes": "* diff=evil\n", "README.md": "changed\n"})
    out = world.ok("diff", run).stdout
    assert "+changed" in out
    assert not marker.exists()


def test_a_run_with_no_commits_has_an_empty_diff(world: World) -> None:
    run = world.run()
    result = world.ok("diff", run)
    assert result.stdout == ""
    assert "no changes" in result.stderr


def test_an_unknown_run_is_not_found(world: World) -> None:
    world.run()
    result = world.cli("diff", "demo-99.1")
    assert result.exit_code == 5
    assert "no run 'demo-99.1'" in result.stderr


# -- merge -----------------------------------------------------------------------------------


def test_merge_fast_forwards_main_in_the_main_checkout(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    run = world.run({"feature.txt": "from the agent\n"})
    tip = head(world.repo, world.record(run)["branch"])
    hook = world.repo / ".git" / "hooks" / "post-merge"
    hook.write_text(f"#!/bin/sh\ntouch {world.repo.parent / 'hook-ran'}\n")
    hook.chmod(0o755)
    # Variables that would point git at another repository or index are not obeyed.
    monkeypatch.setenv("GIT_DIR", str(world.repo.parent / "elsewhere"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(world.repo.parent / "other-index"))

    done = world.json("merge", run)

    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert done["how"] == "fast-forward"
    assert done["into"] == "main"
    assert done["head"] == tip
    assert head(world.repo) == tip
    assert (world.repo / "feature.txt").read_text() == "from the agent\n"
    assert status(world.repo) == ""
    assert not (world.repo.parent / "hook-ran").exists(), "no hook runs"
    assert not (world.repo.parent / "other-index").exists()
    again = world.ok("merge", run)
    assert "nothing to merge" in again.stdout


def test_merge_no_ff_makes_a_merge_commit(world: World) -> None:
    run = world.run({"feature.txt": "x\n"})
    tip = head(world.repo, world.record(run)["branch"])
    done = world.json("merge", run, "--no-ff")
    assert done["how"] == "merge-commit"
    parents = git("rev-list", "--parents", "-n1", "HEAD", cwd=world.repo).split()
    assert parents[2] == tip
    assert f"(launcher run {run})" in git("log", "-1", "--format=%s", cwd=world.repo)


def test_merge_squash_makes_one_commit_with_the_runs_changes(world: World) -> None:
    run = world.run({"feature.txt": "x\n"})
    before = head(world.repo)
    done = world.json("merge", run, "--squash")
    assert done["how"] == "squash"
    assert git("rev-list", "--parents", "-n1", "HEAD", cwd=world.repo).split()[1:] == [before]
    assert (world.repo / "feature.txt").read_text() == "x\n"
    assert status(world.repo) == ""


def test_merge_is_refused_on_a_dirty_checkout_and_changes_nothing(world: World) -> None:
    run = world.run({"feature.txt": "x\n"})
    (world.repo / "src" / "app.py").write_text("print('local edit')\n")
    before, state = head(world.repo), status(world.repo)

    result = world.cli("merge", run)

    assert result.exit_code == 6, result.stderr
    assert "not clean" in result.stderr
    assert "src/app.py" in result.stderr
    assert "nothing was merged" in result.stderr
    assert head(world.repo) == before
    assert status(world.repo) == state
    assert (world.repo / "src" / "app.py").read_text() == "print('local edit')\n"
    assert not (world.repo / "feature.txt").exists()


@pytest.mark.parametrize("how", [(), ("--no-ff",), ("--squash",)], ids=["ff", "no-ff", "squash"])
def test_a_conflicting_merge_is_aborted_and_leaves_nothing_half_merged(world: World, how: tuple[str, ...]) -> None:
    run = world.run({"README.md": "# demo\nthe agent's line two\n", "other.txt": "x\n"})
    (world.repo / "README.md").write_text("# demo\nthe owner's line two\n")
    git("commit", "-qam", "owner edit", cwd=world.repo)
    before = head(world.repo)

    result = world.cli("merge", run, *how)

    assert result.exit_code == 9, result.stderr
    assert "conflicts in README.md" in result.stderr
    assert "aborted, nothing changed" in result.stderr
    assert head(world.repo) == before
    assert status(world.repo) == ""
    assert not (world.repo / ".git" / "MERGE_HEAD").exists()
    assert not (world.repo / "other.txt").exists()
    assert (world.repo / "README.md").read_text() == "# demo\nthe owner's line two\n"


def test_merge_into_a_branch_checked_out_nowhere_only_fast_forwards(world: World) -> None:
    git("branch", "release", "main", cwd=world.repo)
    run = world.run({"feature.txt": "x\n"}, base="release")
    tip = head(world.repo, world.record(run)["branch"])
    assert world.json("merge", run, "--into", "release")["checkout"] is None
    assert head(world.repo, "release") == tip
    assert head(world.repo) != tip

    diverged = world.run({"second.txt": "y\n"}, base="main")
    commit_on(world.repo, "release", {"release-only.txt": "z\n"})
    result = world.cli("merge", diverged, "--into", "release")
    assert result.exit_code == 6
    assert "only a fast-forward" in result.stderr
    assert world.cli("merge", diverged, "--into", "release", "--no-ff").exit_code == 6


def test_a_live_run_is_not_merged(world: World) -> None:
    run = world.run({"feature.txt": "x\n"}, state=RunState.RUNNING)
    result = world.cli("merge", run)
    assert result.exit_code == 6
    assert "still running" in result.stderr


# -- apply -----------------------------------------------------------------------------------


def test_apply_puts_the_changes_in_the_checkout_uncommitted(world: World) -> None:
    run = world.run({"README.md": "# demo\nline two\nagent\n", "new.txt": "new\n", "src/app.py": None})
    (world.repo / "unrelated.txt").write_text("untracked, left alone\n")
    before = head(world.repo)

    done = world.json("apply", run)

    assert sorted(done["files"]) == ["README.md", "new.txt", "src/app.py"]
    assert head(world.repo) == before, "nothing committed"
    assert sorted(status(world.repo).splitlines()) == [
        "?? unrelated.txt",
        "A  new.txt",
        "D  src/app.py",
        "M  README.md",
    ]
    assert (world.repo / "new.txt").read_text() == "new\n"
    # Host git runs from /: a `git apply` there would have written the files at /new.txt.
    assert not Path("/new.txt").exists()


def test_apply_is_refused_over_uncommitted_changes_to_the_same_files(world: World) -> None:
    run = world.run({"README.md": "# demo\nagent\n", "new.txt": "new\n"})
    (world.repo / "README.md").write_text("# demo\nmine, uncommitted\n")
    state = status(world.repo)

    result = world.cli("apply", run)

    assert result.exit_code == 6, result.stderr
    assert "README.md" in result.stderr
    assert "nothing was applied" in result.stderr
    assert status(world.repo) == state
    assert not (world.repo / "new.txt").exists()
    assert (world.repo / "README.md").read_text() == "# demo\nmine, uncommitted\n"


def test_apply_never_overwrites_an_untracked_file(world: World) -> None:
    run = world.run({"new.txt": "the agent's\n", "README.md": "# changed\n"})
    (world.repo / "new.txt").write_text("mine, untracked\n")
    result = world.cli("apply", run)
    assert result.exit_code == 9, result.stderr
    assert "nothing was changed" in result.stderr
    assert (world.repo / "new.txt").read_text() == "mine, untracked\n"
    assert status(world.repo) == "?? new.txt\n", "README.md untouched too: all or nothing"


def test_apply_that_would_conflict_with_head_changes_nothing(world: World) -> None:
    run = world.run({"README.md": "# demo\nthe agent's\n"})
    (world.repo / "README.md").write_text("# demo\nthe owner's\n")
    git("commit", "-qam", "owner", cwd=world.repo)
    result = world.cli("apply", run)
    assert result.exit_code == 9
    assert "conflict" in result.stderr
    assert status(world.repo) == ""


def test_apply_onto_a_moved_head_merges_three_way(world: World) -> None:
    run = world.run({"README.md": "# demo\nline two\nagent at the end\n"})
    (world.repo / "README.md").write_text("# owner's title\nline two\n")
    git("commit", "-qam", "owner", cwd=world.repo)
    world.ok("apply", run)
    assert (world.repo / "README.md").read_text() == "# owner's title\nline two\nagent at the end\n"


# -- checkout --------------------------------------------------------------------------------


def test_checkout_makes_a_host_worktree_of_the_result_and_prints_its_path(world: World) -> None:
    run = world.run({"feature.txt": "x\n", "src/app.py": None})
    branch = world.record(run)["branch"]

    result = world.ok("checkout", run)

    path = Path(result.stdout.strip())
    assert path == (world.root / ".launcher" / "checkouts" / run).absolute()
    assert (path / ".git").is_file(), "a worktree of the repository, not a repository of its own"
    assert git("rev-parse", "HEAD", cwd=path).strip() == head(world.repo, branch)
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=path).strip() == "HEAD", "detached"
    assert sorted(p.name for p in path.iterdir()) == [".git", "README.md", "feature.txt"], "src/app.py was deleted"
    assert str(path) in git("worktree", "list", cwd=world.repo)
    assert world.cli("checkout", run).exit_code == 6, "the same place twice is refused"

    elsewhere = world.root.parent / "look-here"
    assert world.ok("checkout", run, str(elsewhere)).stdout.strip() == str(elsewhere)
    assert (elsewhere / "feature.txt").read_text() == "x\n"


# -- prune -----------------------------------------------------------------------------------


def branch_exists(repo: Path, branch: str) -> bool:
    return bool(repo_git(repo, "branch", "--list", branch).strip())


def test_prune_empty_deletes_only_branches_with_no_commits(world: World) -> None:
    empty, busy = world.run(), world.run({"feature.txt": "x\n"})
    b_empty, b_busy = world.record(empty)["branch"], world.record(busy)["branch"]
    record = world.root / ".launcher" / "runs" / empty
    record.mkdir(parents=True)
    (record / "run.log").write_text("log\n")

    dry = world.json("prune", "--empty", "--dry-run")
    assert [(i["run_id"], i["action"]) for i in dry["items"]] == [(empty, "would-delete")]
    assert branch_exists(world.repo, b_empty), "--dry-run deletes nothing"
    assert record.exists()

    report = world.json("prune", "--empty")

    assert [(i["run_id"], i["action"], i["record_removed"]) for i in report["items"]] == [(empty, "deleted", True)]
    assert not branch_exists(world.repo, b_empty)
    assert branch_exists(world.repo, b_busy)
    assert not record.exists()
    assert world.record(empty)["details"]["branch_pruned"]["tip"]
    assert world.json("prune", "--empty")["items"] == [], "pruned once"
    assert world.cli("diff", empty).exit_code == 5


def test_prune_merged_deletes_merged_and_keeps_unmerged_without_force(world: World) -> None:
    merged, unmerged = world.run({"a.txt": "a\n"}), world.run({"b.txt": "b\n"})
    world.ok("merge", merged)
    b_merged, b_unmerged = world.record(merged)["branch"], world.record(unmerged)["branch"]

    result = world.ok("prune", "--merged", "--older-than", "0s")

    assert not branch_exists(world.repo, b_merged)
    assert branch_exists(world.repo, b_unmerged), "unmerged work stays without --force"
    assert "KEPT" in result.stdout
    assert "1 commit(s) not in main" in result.stdout
    assert "--force" in result.stdout

    forced = world.json("prune", "--older-than", "0s", "--force")
    assert [(i["run_id"], i["action"]) for i in forced["items"]] == [(unmerged, "deleted")]
    assert not branch_exists(world.repo, b_unmerged)


def test_prune_never_touches_a_live_run_or_one_whose_record_holds_its_work(world: World) -> None:
    live = world.run(state=RunState.RUNNING)
    unharvested = world.run(state=RunState.UNHARVESTED)
    report = world.json("prune", "--empty", "--older-than", "0s", "--force")
    assert [(i["run_id"], i["kept_because"]) for i in report["items"]] == [(unharvested, "record-holds-work")]
    for run in (live, unharvested):
        assert branch_exists(world.repo, world.record(run)["branch"])


def test_prune_keeps_kept_refs_with_work_unless_forced(world: World) -> None:
    run = world.run()
    wip = commit_on(world.repo, "main", {"wip.txt": "uncommitted work\n"}, "wip")
    git("update-ref", "refs/heads/main", head(world.repo, "main~1"), cwd=world.repo)  # main back
    git("update-ref", f"refs/launcher/runs/{run}/wip", wip, cwd=world.repo)

    kept = world.json("prune", "--empty")
    assert kept["items"][0]["kept_because"] == "unmerged"
    assert "kept ref" in kept["items"][0]["reason"]

    gone = world.json("prune", "--empty", "--force")["items"][0]
    assert gone["action"] == "deleted"
    assert gone["refs"] == [f"refs/launcher/runs/{run}/wip"]
    assert git("for-each-ref", f"refs/launcher/runs/{run}/", cwd=world.repo) == ""


def test_prune_keeps_a_branch_checked_out_in_a_worktree(world: World) -> None:
    run = world.run()
    branch = world.record(run)["branch"]
    git("worktree", "add", "-q", str(world.root.parent / "wt"), branch, cwd=world.repo)
    item = world.json("prune", "--empty")["items"][0]
    assert item["kept_because"] == "checked-out"
    assert "checked out at" in item["reason"]
    assert branch_exists(world.repo, branch)


def test_a_branch_that_moves_before_its_deletion_is_kept_and_reported(world: World) -> None:
    from launcher.adapters.git_results import GitResults, open_results
    from launcher.core.branch_prune import BranchRules, prune_branches

    run = world.run()
    branch = world.record(run)["branch"]
    locks = world.root / ".launcher" / "locks"

    class MovedMeanwhile(GitResults):
        """Someone commits on the branch after prune looked at it, just before it deletes."""

        def delete_refs(self, expected: dict[str, str]) -> str | None:
            commit_on(world.repo, branch, {"late.txt": "late\n"})
            return super().delete_refs(expected)

    app = Application(str(world.root), None)
    try:
        report = prune_branches(
            app.runs.deps,
            lambda path: MovedMeanwhile(open_results(path, lock_dir=locks).repo),
            BranchRules(empty=True),
            dry_run=False,
        )
    finally:
        app.close()
    assert [(i.run_id, i.kept_because) for i in report.items] == [(run, "moved")]
    assert "moved to" in (report.items[0].reason or "")
    assert branch_exists(world.repo, branch)
    assert "late.txt" in git("ls-tree", "--name-only", branch, cwd=world.repo)
    assert "branch_pruned" not in world.record(run)["details"]


def test_bare_prune_means_merged_and_empty(world: World) -> None:
    empty, unmerged = world.run(), world.run({"b.txt": "b\n"})
    items = {i["run_id"]: i["action"] for i in world.json("prune")["items"]}
    assert items == {empty: "deleted"}
    assert branch_exists(world.repo, world.record(unmerged)["branch"])


# -- a repository owned by an unprivileged user (launcher runs as root) -----------------------


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A folder uid 1000 can reach (pytest's own temporary folders are root's, 0700)."""
    import shutil
    import tempfile

    top = Path(tempfile.mkdtemp(prefix="launcher-results-"))
    top.chmod(0o755)
    try:
        yield top
    finally:
        shutil.rmtree(top)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown a repository to another user")
def test_results_in_a_repository_owned_by_an_unprivileged_user(world: World, shared_tmp: Path) -> None:
    root, repo = shared_tmp / "case", shared_tmp / "demo"
    root.mkdir()
    make_repo(repo)
    git("config", "user.name", "Repo Owner", cwd=repo)
    git("config", "user.email", "owner@example.invalid", cwd=repo)
    owned = World(root, repo)
    run = owned.run({"feature.txt": "x\n"})
    empty = owned.run()
    subprocess.run(["chown", "-R", "1000:1000", str(repo)], check=True)

    path = Path(owned.ok("checkout", run).stdout.strip())
    assert (path / "feature.txt").stat().st_uid == 1000, "checked out as the repository's owner"
    assert (path / "feature.txt").read_text() == "x\n"
    assert owned.json("merge", run)["how"] == "fast-forward"
    assert (repo / "feature.txt").stat().st_uid == 1000
    assert owned.json("diff", run, "--stat")["files"][0]["path"] == "feature.txt"
    assert [i["run_id"] for i in owned.json("prune", "--empty")["items"]] == [empty]
    not_theirs = [p for p in (repo / ".git").rglob("*") if p.stat().st_uid != 1000]
    assert not_theirs == [], "nothing in the repository became root's"
    assert not branch_exists(repo, owned.record(empty)["branch"])


def test_on_a_terminal_the_diff_shows_the_agents_control_characters_as_text(world: World) -> None:
    import pty
    import sys

    run = world.run({"README.md": "title \x1b]0;owned\x07 \x1b[2J\n"})
    primary, secondary = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LAUNCHER_", "CASE_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "launcher", "--root", str(world.root), "diff", run],
        stdout=secondary, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(secondary)
    shown = b""
    while True:
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the other side closed
            break
        if not chunk:
            break
        shown += chunk
    os.close(primary)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert b"^[]0;owned^G" in shown
    assert b"^[[2J" in shown
    assert b"\x1b]0;" not in shown
    assert b"\x1b[2J" not in shown
    assert b"\x1b[32m+title" in shown, "colored on a terminal"

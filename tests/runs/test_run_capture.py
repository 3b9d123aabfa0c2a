"""Nothing the agent made is lost: what a run leaves is kept before its worktree goes (issue #15).

HEAD's commits go on the run's branch; its other branches, tags and stashes and its uncommitted
and untracked work (a commit on HEAD) go under ``refs/launcher/runs/<run-id>/``; `.case/` never
reaches the branch. A harvest that cannot complete keeps everything, ends ``unharvested`` (exit
15), says how to recover, and `launcher import` turns the kept bundle into a branch.

Real Docker engine, real git, the real CLI in separate processes.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from runkit import Case, CliResult, head_of, make_repo, repo_git, run_id_of, worktree_paths

from launcher.errors import ExitCode

pytestmark = pytest.mark.docker

LEAVES_EVERYTHING = r"""
set -eu
echo "on the branch" > committed.txt && git add committed.txt && git commit -qm "on the branch"
git checkout -qb side
echo "side work" > side.txt && git add side.txt && git commit -qm "side work"
git tag v-side
git tag -a -m "an annotated tag" v-annotated
git checkout -q "$CASE_BRANCH"
echo "stashed change" >> README.md && git stash -q
echo "second stash" > stash2.txt && git add stash2.txt && git stash -q
echo "uncommitted edit" >> README.md
echo "staged then edited" > staged.txt && git add staged.txt && echo "edited after staging" > staged.txt
echo "not even added" > untracked.txt
mkdir -p deep/er/.case && echo "a nested .case is ordinary work" > deep/er/.case/notes
echo "ignored.log" > .gitignore && echo "build output" > ignored.log
echo "scope" > ".case/$CASE_TASK_ID/scratch"
"""


def show(repo: Path, rev: str, path: str) -> str:
    return repo_git(repo, "show", f"{rev}:{path}")


def test_every_branch_tag_stash_and_uncommitted_file_is_kept_and_named(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    task = case.create_task(git_repo, "Leaves everything", "--", "sh", "-c", LEAVES_EVERYTHING)

    run = case.json("run", task)

    assert run["state"] == "exited", run["details"].get("errors")
    ns = f"refs/launcher/runs/{run['id']}"
    harvest = run["details"]["harvest"]
    assert set(harvest["refs"]) == {
        f"{ns}/heads/side",
        f"{ns}/tags/v-side",
        f"{ns}/tags/v-annotated",
        f"{ns}/stash/0",
        f"{ns}/stash/1",
        f"{ns}/wip",
    }, harvest["refs"]
    assert harvest["wip"] == f"{ns}/wip"
    # Each named ref is in the repository, with what the agent left there.
    for ref, sha in harvest["refs"].items():
        assert repo_git(git_repo, "rev-parse", ref).strip() == sha
    tip = head_of(git_repo, run["branch"])
    assert show(git_repo, tip, "committed.txt") == "on the branch\n"
    assert show(git_repo, f"{ns}/heads/side", "side.txt") == "side work\n"
    assert head_of(git_repo, f"{ns}/tags/v-side") == head_of(git_repo, f"{ns}/heads/side")
    assert repo_git(git_repo, "cat-file", "-t", f"{ns}/tags/v-annotated").strip() == "tag"
    # stash@{0} is the newest: the second stash; stash@{1} the README change.
    assert show(git_repo, f"{ns}/stash/0", "stash2.txt") == "second stash\n"
    assert show(git_repo, f"{ns}/stash/1", "README.md").endswith("stashed change\n")
    # The uncommitted work: a commit on HEAD whose files are the worktree as the agent left it.
    wip = f"{ns}/wip"
    assert head_of(git_repo, f"{wip}^1") == tip
    assert show(git_repo, wip, "README.md").endswith("uncommitted edit\n")
    assert show(git_repo, wip, "untracked.txt") == "not even added\n"
    assert show(git_repo, wip, "staged.txt") == "edited after staging\n"
    assert show(git_repo, f"{wip}^2", "staged.txt") == "staged then edited\n", "what was staged is its 2nd parent"
    assert show(git_repo, wip, "deep/er/.case/notes") == "a nested .case is ordinary work\n"
    files = repo_git(git_repo, "ls-tree", "-r", "--name-only", wip).split()
    assert "ignored.log" not in files, "ignored files are not kept (documented)"
    assert not [f for f in files if f.startswith(".case/")], "the run's scope is never kept as work"
    # Everything is kept, so the worktree went, and only after: nothing of the run is left.
    assert not Path(run["worktree"]).exists()
    assert worktree_paths(git_repo) == [str(git_repo)]
    assert head_of(git_repo, "main") == base
    assert not repo_git(git_repo, "for-each-ref", f"{ns}/head"), "HEAD's staging ref goes once on the branch"


# -- harvests that cannot complete ---------------------------------------------------------------


def unharvested(case: Case, result: Any) -> dict[str, Any]:
    """The record of a foreground run that ended unharvested: exit 15, and the reason on stderr."""
    assert result.exit_code == ExitCode.RUN_UNHARVESTED, result.stdout + result.stderr
    record = case.run_record(run_id_of(result.stderr))
    assert record["state"] == "unharvested"
    harvest = record["details"]["harvest"]
    assert harvest["error"], harvest
    recover = [line for line in result.stderr.splitlines() if line.startswith("launcher: recover: ")]
    assert recover, result.stderr
    assert all("launcher import" in line for line in recover), result.stderr
    bundle = Path(harvest["bundle"])
    assert bundle.is_file()
    assert bundle.is_relative_to(case.root / ".launcher" / "runs" / record["id"])
    assert f"kept: bundle {bundle}" in result.stderr
    return record


BIG_COMMIT = r"""
set -eu
head -c 200000 /dev/urandom > big.bin && git add big.bin && git commit -qm "too big to harvest"
"""


def test_a_bundle_over_the_cap_is_kept_and_imported_once_the_cap_is_raised(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    (case.root / "launcher.toml").write_text("[run]\nbundle_max = 65536\n")

    result = case.cli("run", "--repo", str(git_repo), "--title", "Too big", "--", "sh", "-c", BIG_COMMIT)

    record = unharvested(case, result)
    harvest = record["details"]["harvest"]
    assert "over [run] bundle_max (65536)" in harvest["error"]
    assert Path(harvest["bundle"]).stat().st_size > 65536
    assert head_of(git_repo, record["branch"]) == base
    # Its content was not taken in: the worktree and private git dir stay, as the agent left them.
    assert Path(harvest["kept_worktree"], "big.bin").stat().st_size == 200000
    assert Path(harvest["kept_sandbox"], "git").is_dir()
    refused = case.cli("import", record["id"])
    assert refused.exit_code == ExitCode.RUN_UNHARVESTED, refused.stderr
    assert "bundle_max" in refused.stderr

    (case.root / "launcher.toml").write_text("[run]\nbundle_max = 1048576\n")
    imported = case.ok("import", record["id"])

    tip = head_of(git_repo, record["branch"])
    assert tip != base
    assert head_of(git_repo, f"{tip}~1") == base
    assert repo_git(git_repo, "log", "-1", "--format=%s", tip).strip() == "too big to harvest"
    assert f"1 commit(s) on {record['branch']}" in imported.stdout
    assert case.run_record(record["id"])["details"]["harvest"]["imported"] == record["branch"]
    case.ok("rm", record["id"])
    assert not Path(harvest["kept_worktree"]).exists()


def test_a_head_that_does_not_descend_from_its_base_is_kept_for_a_branch_of_its_own(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    agent = "git checkout -q --orphan fresh && git commit -q -m unrelated && echo wip > wip.txt"

    result = case.cli("run", "--repo", str(git_repo), "--title", "Orphan", "--", "sh", "-c", agent)

    record = unharvested(case, result)
    harvest = record["details"]["harvest"]
    assert "does not descend from its base" in harvest["error"]
    assert head_of(git_repo, record["branch"]) == base
    ns = f"refs/launcher/runs/{record['id']}"
    orphan = harvest["refs"][f"{ns}/head"]
    assert repo_git(git_repo, "rev-list", "--count", orphan).strip() == "1", "kept in the repository already"
    assert show(git_repo, f"{ns}/wip", "wip.txt") == "wip\n"
    assert "kept_worktree" not in harvest, "all of it is in the repository: the worktree could go"
    assert "--branch NAME" in result.stderr

    case.ok("import", record["id"], "--branch", "rescued/orphan")

    assert head_of(git_repo, "rescued/orphan") == orphan
    assert head_of(git_repo, record["branch"]) == base


WAITS_FOR_GO = r"""
set -eu
echo mine > mine.txt && git add mine.txt && git commit -qm "the run's commit"
while [ ! -e /workspace/go ]; do sleep 0.05; done
rm -f /workspace/go
"""


def test_a_branch_moved_by_someone_else_is_left_alone_and_the_work_kept(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    task = case.create_task(git_repo, "Someone moves my branch", "--", "sh", "-c", WAITS_FOR_GO)
    proc = case.popen("run", task, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    run_id = case.wait_running(task)
    record = case.run_record(run_id)
    # Someone else commits on the run's branch in the real repository while the run works.
    theirs = repo_git(git_repo, "commit-tree", "-m", "someone else", "-p", base, f"{base}^{{tree}}").strip()
    repo_git(git_repo, "update-ref", f"refs/heads/{record['branch']}", theirs, base)
    Path(record["worktree"], "go").touch()
    out, err = proc.communicate(timeout=180)

    record = unharvested(case, CliResult(proc.returncode, out.decode(), err.decode()))
    harvest = record["details"]["harvest"]
    assert "moved by someone else" in harvest["error"]
    assert head_of(git_repo, record["branch"]) == theirs, "their commit stays"
    mine = harvest["refs"][f"refs/launcher/runs/{run_id}/head"]
    assert show(git_repo, mine, "mine.txt") == "mine\n"

    case.ok("import", run_id, "--branch", "rescued/mine")
    assert head_of(git_repo, "rescued/mine") == mine


CORRUPTS_ITS_BUNDLE = r"""
set -eu
echo precious > precious.txt && git add precious.txt && git commit -qm "precious work"
git bundle create -q /workspace/good.bundle HEAD --not "$LAUNCHER_BASE_SHA"
head -c 120 /workspace/good.bundle > /launcher/out/run.bundle
# The entry cannot replace this bundle, nor write its note.
chmod 555 /launcher/out
"""


def test_a_corrupt_bundle_keeps_everything_and_a_good_one_can_be_imported(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)

    result = case.cli("run", "--repo", str(git_repo), "--title", "Corrupt", "--", "sh", "-c", CORRUPTS_ITS_BUNDLE)

    record = unharvested(case, result)
    harvest = record["details"]["harvest"]
    assert "corrupt" in harvest["error"]
    assert head_of(git_repo, record["branch"]) == base
    worktree, sandbox = Path(harvest["kept_worktree"]), Path(harvest["kept_sandbox"])
    assert (worktree / "precious.txt").read_text() == "precious\n"
    assert (sandbox / "git" / "objects").is_dir(), "the run's commits are only there: kept"
    assert "--bundle FILE" in result.stderr
    refused = case.cli("import", record["id"])
    assert refused.exit_code == ExitCode.RUN_UNHARVESTED

    case.ok("import", record["id"], "--bundle", str(worktree / "good.bundle"))

    tip = head_of(git_repo, record["branch"])
    assert show(git_repo, tip, "precious.txt") == "precious\n"
    assert head_of(git_repo, f"{tip}~1") == base


def test_a_batch_counts_an_unharvested_run_as_failed(case: Case, git_repo: Path) -> None:
    (case.root / "launcher.toml").write_text("[run]\nbundle_max = 65536\n")
    big = case.create_task(git_repo, "Too big in a batch", "--queue", "--", "sh", "-c", BIG_COMMIT)
    fine = case.create_task(
        git_repo, "Fine in a batch", "--queue", "--", "sh", "-c", "git commit -q --allow-empty -m ok"
    )

    result = case.cli("batch", "--json", "--poll", "0.2", timeout=300)

    assert result.exit_code == ExitCode.RUN_FAILED, result.stdout + result.stderr
    states = {r["task_id"]: r["state"] for r in case.runs()}
    assert states == {big: "unharvested", fine: "exited"}


# -- .case/ never reaches the branch -----------------------------------------------------------

FORCES_THE_SCOPE_IN = r"""
set -eu
mkdir -p many
for i in $(seq 1 250); do echo "$i" > "many/f$i.txt"; done
git add many && git commit -qm "250 files first"
echo "forced" > .case/x
echo "marker" > ".case/$CASE_TASK_ID/tested"
git add -f .case/x ".case/$CASE_TASK_ID/tested" && git commit -qm "forced the scope in"
echo after > after.txt && git add after.txt && git commit -qm "after"
git rm -q --cached -r .case && git commit -qm "removed again" && git add -f .case/x && git commit -qm "and back"
"""


def test_case_scope_committed_with_add_f_never_reaches_the_branch(case: Case, git_repo: Path) -> None:
    base = head_of(git_repo)
    task = case.create_task(git_repo, "Forces .case in", "--", "sh", "-c", FORCES_THE_SCOPE_IN)

    run = case.json("run", task)

    assert run["state"] == "exited", run["details"].get("errors")
    tip = head_of(git_repo, run["branch"])
    commits = repo_git(git_repo, "rev-list", f"{base}..{tip}").split()
    assert len(commits) == 5
    for commit in commits:
        paths = repo_git(git_repo, "ls-tree", "-r", "--name-only", commit).split()
        assert not [p for p in paths if p == ".case" or p.startswith(".case/")], (commit, paths[:5])
    touched = repo_git(git_repo, "log", "--format=", "--name-only", f"{base}..{tip}").split()
    assert not [p for p in touched if p.startswith(".case")]
    assert show(git_repo, tip, "after.txt") == "after\n"
    assert len(repo_git(git_repo, "ls-tree", "--name-only", f"{tip}:many").split()) == 250
    messages = repo_git(git_repo, "log", "--format=%s", f"{base}..{tip}").splitlines()
    assert messages == ["and back", "removed again", "after", "forced the scope in", "250 files first"]
    harvest = run["details"]["harvest"]
    assert harvest["tip"] == tip
    assert "without it" in " ".join(harvest["warnings"])
    assert set(harvest["rewritten"].values()) <= set(commits)
    assert len(harvest["rewritten"]) == 4, "the first commit never had .case/ and kept its id"


def test_a_base_that_tracks_case_keeps_its_own_case(case: Case, tmp_path: Path) -> None:
    """`.case/` the base already had is the base's: only the run's changes to it are dropped."""
    repo = make_repo(tmp_path / "tracked-case", {"README.md": "x\n", ".case/README": "the project's own\n"})
    agent = "echo mine > .case/README && git add -f .case/README && echo y > y && git add y && git commit -qm y"

    run = case.json("run", "--repo", str(repo), "--title", "Tracked scope", "--", "sh", "-c", agent)

    tip = head_of(repo, run["branch"])
    assert show(repo, tip, ".case/README") == "the project's own\n"
    assert show(repo, tip, "y") == "y\n"
    assert repo_git(repo, "diff", "--name-only", f"{tip}~1", tip).split() == ["y"]

"""A kept worktree never runs agent code on the host (issue #15, item 5).

`--keep-worktree` hands the owner the host's own fresh checkout of the harvested branch, plus
the captured uncommitted work, never the agent's files: a nested repository the agent planted
(a `.git` folder, a gitfile, a symlink named `.git`, at any depth) with `core.fsmonitor` set is
not in it, so the owner's `git status` there runs nothing. The same on a worktrees folder on
another file system, and no file the owner gets is world-writable.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import Case, agent_image, head_of, launcher_roots, make_repo, run_id_of, shared_dir

__all__ = ["agent_image", "launcher_roots", "shared_dir"]
pytestmark = pytest.mark.docker

OWNER = 1000

PLANTS_NESTED_REPOSITORIES = r"""
set -eu
plant() {  # a repository whose config runs a command when git looks at it
    git init -q "$1" && git -C "$1" config core.fsmonitor "touch $CANARIES/$2"
}
plant sub sub
mkdir -p deep/er && plant deep/er/repo deep
mkdir x && printf 'gitdir: ../sub/.git\n' > x/.git
mkdir z && ln -s ../sub/.git z/.git
mkdir -p w/v && printf 'gitdir: ../../sub/.git\n' > w/v/.git && echo "next to a gitfile" > w/v/file.txt
echo committed > committed.txt && git add committed.txt && git commit -qm "committed work"
echo "uncommitted edit" >> README.md
echo notes > notes.txt
chmod a+rwX README.md notes.txt committed.txt src src/app.py
umask 000
echo open > world-writable.txt
"""


def _git_as_owner(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git as the repository's owner would run it: their uid, no safe.directory override."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "XDG_"))}
    env.update(HOME=str(home), LC_ALL="C")
    return subprocess.run(
        ["git", *args],
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        check=False,
        user=OWNER,
        group=OWNER,
        extra_groups=[],
    )


@pytest.fixture(params=["same-disk", "tmpfs"])
def worktrees_dir(request: pytest.FixtureRequest, shared_dir: Path) -> Iterator[Path]:
    """Where the case root keeps its worktrees: under it, or on a file system of its own."""
    folder = shared_dir / "worktrees"
    folder.mkdir()
    if request.param == "same-disk":
        yield folder
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m,mode=0755", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    try:
        assert os.stat(folder).st_dev != os.stat(shared_dir).st_dev
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_kept_worktree_holds_no_nested_repository_and_nothing_world_writable(
    shared_dir: Path, worktrees_dir: Path, launcher_roots: list[Path]
) -> None:
    repo = make_repo(shared_dir / "repo")
    subprocess.run(["chown", "-R", f"{OWNER}:{OWNER}", str(repo)], check=True)
    canaries = shared_dir / f"canaries-{uuid.uuid4().hex}"
    canaries.mkdir()
    os.chown(canaries, OWNER, OWNER)
    root = shared_dir / "case"
    root.mkdir()
    (root / "launcher.toml").write_text(f'[run]\nworktrees_dir = "{worktrees_dir}"\n')
    launcher_roots.append(root)
    case = Case(root)
    agent = f"CANARIES={canaries}\n{PLANTS_NESTED_REPOSITORIES}"

    result = case.cli("run", "--keep-worktree", "--repo", str(repo), "--title", "Plants", "--", "sh", "-c", agent)

    assert result.exit_code == 0, result.stdout + result.stderr
    record = case.run_record(run_id_of(result.stderr))
    worktree = Path(record["worktree"])
    assert worktree.parent == worktrees_dir
    assert worktree.is_dir()
    # As the owner, in every folder the agent made a repository of: nothing runs.
    for folder in (".", "sub", "x", "z", "w/v", "deep/er/repo", "deep"):
        _git_as_owner(shared_dir, "-C", str(worktree / folder), "status")
        _git_as_owner(shared_dir, "-C", str(worktree / folder), "log", "-1")
    assert list(canaries.iterdir()) == [], "a repository the agent planted ran its command as the owner"
    # Because nothing of them is there: the only .git is the worktree's own file.
    found = [
        str(Path(dirpath, name).relative_to(worktree))
        for dirpath, dirnames, filenames in os.walk(worktree)
        for name in dirnames + filenames
        if name == ".git"
    ]
    assert found == [".git"], found
    assert not (worktree / "sub").exists()
    assert not (worktree / "z").exists()
    warnings = " ".join(record["details"]["harvest"]["warnings"])
    for left_out in ("sub", "x", "z", "w/v", "deep/er/repo"):
        assert f"left out (a nested repository): {left_out}" in warnings, warnings
    # The host's checkout: the owner's files, the modes git gives, on the run's commit, with
    # the uncommitted work back as uncommitted work.
    for dirpath, dirnames, filenames in os.walk(worktree):
        for name in [*dirnames, *filenames]:
            info = Path(dirpath, name).lstat()
            assert (info.st_uid, info.st_gid) == (OWNER, OWNER), Path(dirpath, name)
            if not stat.S_ISLNK(info.st_mode):
                assert not info.st_mode & stat.S_IWOTH, f"{Path(dirpath, name)} is world-writable"
    head = _git_as_owner(shared_dir, "-C", str(worktree), "rev-parse", "HEAD")
    assert head.returncode == 0, head.stderr
    assert head.stdout.strip() == head_of(repo, record["branch"])
    status = _git_as_owner(shared_dir, "-C", str(worktree), "status", "--porcelain", "--untracked-files=all")
    assert status.returncode == 0, status.stderr
    assert sorted(status.stdout.splitlines()) == [" M README.md", "?? notes.txt", "?? world-writable.txt"]
    assert (worktree / "README.md").read_text().endswith("uncommitted edit\n")
    assert (worktree / "committed.txt").read_text() == "committed\n"
    assert case.ok("rm", record["id"])
    assert not worktree.exists()

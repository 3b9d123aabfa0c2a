"""The clone cache on real git: a local bare repository stands in for the forge (no network)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import git, make_repo

from launcher.adapters import clone_cache
from launcher.adapters.clone_cache import CloneCache, folder_name
from launcher.adapters.git import Repository
from launcher.core.repos import normalise_url
from launcher.errors import GitError


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    source = make_repo(tmp_path / "source")
    bare = tmp_path / "remote.git"
    git("clone", "-q", "--bare", str(source), str(bare), cwd=tmp_path)
    return bare


@pytest.fixture
def cache(tmp_path: Path) -> CloneCache:
    state = tmp_path / "case" / ".launcher"
    return CloneCache(state / "clones", state / "locks", attempts=3, wait_max=0.05)


def _sync(cache: CloneCache, url: str) -> Path:
    return cache.sync(url, normalise_url(url))


def _push_commit(remote: Path, work: Path, name: str, branch: str = "main") -> str:
    if not work.exists():
        git("clone", "-q", str(remote), str(work), cwd=remote.parent)
    git("checkout", "-q", "-B", branch, cwd=work)
    (work / name).write_text(f"{name}\n")
    git("add", name, cwd=work)
    git("commit", "-q", "-m", name, cwd=work)
    git("push", "-q", "-f", "origin", f"HEAD:refs/heads/{branch}", cwd=work)
    return git("rev-parse", "HEAD", cwd=work).strip()


def test_a_clone_is_made_once_and_is_a_repository_worktrees_are_added_to(
    cache: CloneCache, remote: Path, tmp_path: Path
) -> None:
    folder = _sync(cache, str(remote))
    assert folder == cache.clones_dir / folder_name(normalise_url(str(remote)))
    repo = Repository.open(folder, lock_dir=cache.locks_dir)
    head = git("rev-parse", "HEAD", cwd=remote).strip()
    assert repo.resolve_commit("HEAD") == repo.resolve_commit("main") == head
    assert repo.config_get("core.bare") == "false"
    assert repo.config_get("transfer.fsckobjects") == "true"
    assert repo.config_get("gc.auto") == "0"
    assert repo.config_get("remote.origin.url") == str(remote)
    # Nothing is checked out in the clone's own folder: only .git.
    assert [p.name for p in folder.iterdir()] == [".git"]
    worktree = tmp_path / "wt"
    repo.add_worktree(worktree, "launcher/api-1/1", head)
    assert str(worktree) in repo.worktree_paths()
    assert repo.resolve_commit("launcher/api-1/1") == head
    assert list(cache.clones_dir.iterdir()) == [folder]  # no staging folder left


def test_every_run_fetches_first_and_run_branches_are_never_fetched_over(
    cache: CloneCache, remote: Path, tmp_path: Path
) -> None:
    folder = _sync(cache, str(remote))
    repo = Repository.open(folder, lock_dir=cache.locks_dir)
    base = repo.resolve_commit("HEAD")
    repo.add_worktree(tmp_path / "wt", "launcher/api-1/1", base)
    work = tmp_path / "pusher"
    newer = _push_commit(remote, work, "newer.txt")
    feature = _push_commit(remote, work, "feature.txt", branch="feature")
    # Someone pushed a branch of the run's name (a publish from another box): ours stays ours.
    _push_commit(remote, work, "theirs.txt", branch="launcher/api-1/1")

    assert _sync(cache, "file://" + str(remote)) == folder  # another spelling: the same clone
    assert repo.resolve_commit("HEAD") == repo.resolve_commit("main") == newer
    assert repo.resolve_commit("feature") == feature
    assert repo.resolve_commit("launcher/api-1/1") == base


def test_the_environments_git_variables_do_not_redirect_it(
    cache: CloneCache, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoy = make_repo(tmp_path / "decoy")
    monkeypatch.setenv("GIT_DIR", str(decoy / ".git"))
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", "remote.origin.url")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", str(decoy))
    monkeypatch.setenv("GIT_ASKPASS", "/usr/local/bin/host-askpass")
    folder = _sync(cache, str(remote))
    repo = Repository.open(folder, lock_dir=cache.locks_dir)
    assert repo.resolve_commit("HEAD") == git("rev-parse", "HEAD", cwd=remote).strip()
    assert not (decoy / ".git" / "refs" / "heads" / "launcher").exists()
    # Which variables the clone cache's git gets, one by one: tests/adapters/test_host_git_env.py.


def test_objects_that_fail_fsck_are_refused(cache: CloneCache, tmp_path: Path) -> None:
    bad = tmp_path / "bad.git"
    git("init", "-q", "--bare", str(bad), cwd=tmp_path)
    empty_tree = subprocess.run(
        ["git", f"--git-dir={bad}", "hash-object", "-w", "-t", "tree", "/dev/null"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    body = f"tree {empty_tree}\nauthor A <a@example.invalid> 1 +0000\ncommitter A <a@example.invalid> soon +0000\n\nx\n"
    commit = subprocess.run(
        ["git", f"--git-dir={bad}", "hash-object", "-w", "--literally", "-t", "commit", "--stdin"],
        input=body,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    git(f"--git-dir={bad}", "update-ref", "refs/heads/main", commit, cwd=tmp_path)
    with pytest.raises(GitError, match=r"(?i)fsck|bad ?date"):
        _sync(cache, str(bad))
    assert not cache.clones_dir.exists() or list(cache.clones_dir.iterdir()) == []


def test_a_clone_killed_half_way_is_cleared_before_the_next(cache: CloneCache, remote: Path) -> None:
    key = normalise_url(str(remote))
    stale = cache.clones_dir / f".{folder_name(key)}.abc123"
    (stale / ".git").mkdir(parents=True)
    folder = cache.sync(str(remote), key)
    assert sorted(p.name for p in cache.clones_dir.iterdir()) == [folder.name]


def test_something_else_in_the_clone_folder_is_refused_not_used(cache: CloneCache, remote: Path) -> None:
    key = normalise_url(str(remote))
    planted = cache.path_of(key)
    planted.mkdir(parents=True)
    (planted / "notes.txt").write_text("not a clone\n")
    with pytest.raises(Exception, match="no clone launcher made"):
        cache.sync(str(remote), key)
    assert (planted / "notes.txt").exists()


@pytest.fixture
def hanging_up() -> Iterator[tuple[str, list[int]]]:
    """A loopback HTTP "server" that accepts and closes every connection: a flaky forge."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}/team/api.git", accepted
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_network_failures_are_retried_a_bounded_number_of_times(
    cache: CloneCache, hanging_up: tuple[str, list[int]]
) -> None:
    url, accepted = hanging_up
    with pytest.raises(GitError, match="gave up after 3 attempts") as caught:
        _sync(cache, url)
    assert re.search("Connection reset|Empty reply from server", caught.value.message)
    assert len(accepted) == 3
    assert list(cache.clones_dir.iterdir()) == []


def test_a_permanent_failure_is_not_retried(cache: CloneCache, tmp_path: Path) -> None:
    with pytest.raises(GitError) as caught:
        _sync(cache, str(tmp_path / "no-such-remote.git"))
    assert "gave up" not in caught.value.message
    assert "does not appear to be a git repository" in caught.value.message or "not" in caught.value.message


def test_a_token_in_gits_complaint_is_scrubbed() -> None:
    said = "fatal: unable to access 'https://bot:ghp_secret@git.example.com/api.git/': error"
    assert "ghp_secret" not in clone_cache._scrub(said)


def test_the_remote_of_a_checkout_is_read_raw(tmp_path: Path, cache: CloneCache) -> None:
    repo = make_repo(tmp_path / "checkout")
    assert cache.remote_url(repo) is None
    git("remote", "add", "upstream", "git@example.com:team/api.git", cwd=repo)
    git("config", "url.https://mirror.invalid/.insteadOf", "git@example.com:", cwd=repo)
    assert cache.remote_url(repo) == "git@example.com:team/api.git"  # machine-local rewrites not applied
    git("remote", "add", "origin", "https://example.com/api.git", cwd=repo)
    assert cache.remote_url(repo) == "https://example.com/api.git"
    assert os.environ.get("GIT_DIR") is None


def test_a_fetch_that_meets_a_git_lock_is_tried_again(
    cache: CloneCache, remote: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from launcher.adapters import faults

    folder = _sync(cache, str(remote))
    newer = _push_commit(remote, tmp_path / "pusher", "newer.txt")
    monkeypatch.setenv(faults.ENV, "git.clone-cache-fetch=2")
    monkeypatch.setattr(faults, "_remaining", None)
    assert _sync(cache, str(remote)) == folder  # two injected "index.lock exists", then the fetch
    assert Repository.open(folder, lock_dir=cache.locks_dir).resolve_commit("HEAD") == newer
    monkeypatch.setenv(faults.ENV, "git.clone-cache-fetch=3")
    monkeypatch.setattr(faults, "_remaining", None)
    with pytest.raises(GitError, match=r"index\.lock"):
        _sync(cache, str(remote))  # bounded: the third is the last attempt

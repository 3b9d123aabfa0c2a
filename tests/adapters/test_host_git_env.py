"""The environment host git runs with: launcher's own, no ``GIT_*`` of the caller's but, where git
talks to a remote, the host's own ways to authenticate. Pinned for the rule and for each use."""

from __future__ import annotations

import os
import pwd
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import make_repo

from launcher.adapters.clone_cache import CloneCache
from launcher.adapters.git import HOST_AUTH_VARIABLES, Owner, Repository, host_git_env
from launcher.adapters.git_publish import GitPublisher

AUTH = {
    "GIT_ASKPASS": "/usr/local/bin/host-askpass",
    "GIT_SSH": "/usr/local/bin/host-ssh",
    "GIT_SSH_COMMAND": "ssh -i /etc/host-key",
}
# What could redirect git, or make it prompt; none of it may reach host git.
REDIRECTS = {
    "GIT_DIR": "/tmp/decoy/.git",
    "GIT_WORK_TREE": "/tmp/decoy",
    "GIT_INDEX_FILE": "/tmp/decoy/index",
    "GIT_OBJECT_DIRECTORY": "/tmp/decoy/objects",
    "GIT_EXEC_PATH": "/tmp/decoy/libexec",
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "core.hooksPath",
    "GIT_CONFIG_VALUE_0": "/tmp/decoy/hooks",
    "GIT_CONFIG_GLOBAL": "/tmp/decoy/gitconfig",
    "GIT_CONFIG_PARAMETERS": "'core.fsmonitor'='/tmp/decoy/fsmonitor'",
    # Not a way to authenticate of its own: only the three above are kept (as before the merge).
    "GIT_SSH_VARIANT": "plink",
    "GIT_TERMINAL_PROMPT": "1",
}


@pytest.fixture
def caller_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {**AUTH, **REDIRECTS, "LC_ALL": "de_DE.UTF-8", "XDG_CONFIG_HOME": "/tmp/xdg"}.items():
        monkeypatch.setenv(name, value)


def git_vars(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("GIT_")}


@pytest.mark.usefixtures("caller_env")
def test_local_git_gets_no_git_variable_of_the_callers() -> None:
    env = host_git_env()
    assert git_vars(env) == {"GIT_TERMINAL_PROMPT": "0"}
    assert env["LC_ALL"] == "C"
    assert env["PATH"] == os.environ["PATH"], "the rest of launcher's environment is kept"
    assert env["XDG_CONFIG_HOME"] == "/tmp/xdg", "git as launcher's own user reads launcher's config"


@pytest.mark.usefixtures("caller_env")
def test_git_that_talks_to_a_remote_keeps_the_hosts_ways_to_authenticate_only() -> None:
    assert set(HOST_AUTH_VARIABLES) == set(AUTH)
    assert git_vars(host_git_env(auth=True)) == {**AUTH, "GIT_TERMINAL_PROMPT": "0"}


@pytest.mark.usefixtures("caller_env")
def test_git_as_the_repositorys_owner_reads_the_owners_config_not_the_callers() -> None:
    me = os.getuid()
    env = host_git_env(Owner(me, os.getgid()), auth=True)
    assert env["HOME"] == pwd.getpwuid(me).pw_dir
    assert "XDG_CONFIG_HOME" not in env
    assert git_vars(env) == {**AUTH, "GIT_TERMINAL_PROMPT": "0"}
    unknown = max(p.pw_uid for p in pwd.getpwall()) + 1
    assert host_git_env(Owner(unknown, unknown))["HOME"] == "/nonexistent"


# -- each use, through the git it really starts ------------------------------------------------


@pytest.fixture
def repo(tmp_path: Path) -> Repository:
    top = make_repo(tmp_path / "repo")
    return Repository(top, top / ".git", tmp_path / "locks")


@pytest.fixture
def seen_env(repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[], dict[str, str]]:
    """A ``git`` first on PATH that records the environment it was started with (the repository
    is made with the real one first)."""
    shim = tmp_path / "shim"
    shim.mkdir()
    dump = tmp_path / "env.dump"
    (shim / "git").write_text(f"#!/bin/sh\nenv -0 > '{dump}'\n")
    (shim / "git").chmod(0o755)
    monkeypatch.setenv("PATH", f"{shim}{os.pathsep}{os.environ['PATH']}")

    def read() -> dict[str, str]:
        pairs = [entry.partition("=") for entry in dump.read_text().split("\0") if entry]
        dump.unlink()
        return {name: value for name, _, value in pairs}

    return read


@pytest.mark.usefixtures("caller_env")
def test_each_use_runs_git_with_its_rule(
    repo: Repository, tmp_path: Path, seen_env: Callable[[], dict[str, str]]
) -> None:
    assert repo.owner.uid == os.geteuid(), "git runs as launcher itself here: no owner's HOME"

    repo.git("status")
    assert git_vars(seen_env()) == {"GIT_TERMINAL_PROMPT": "0"}, "worktrees and bundles: local git"

    cache = CloneCache(tmp_path / "clones", tmp_path / "locks")
    cache._git(None, "version")
    assert git_vars(seen_env()) == {**AUTH, "GIT_TERMINAL_PROMPT": "0"}, "the clone cache clones and fetches"

    GitPublisher()._git(repo, ["ls-remote", "origin"], remote="origin")
    assert git_vars(seen_env()) == {**AUTH, "GIT_TERMINAL_PROMPT": "0"}, "a publish pushes"

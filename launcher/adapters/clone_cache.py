"""The clone cache: repositories named by remote URL, cloned on demand under the case root.

Each clone lives in ``<root>/.launcher/clones/<name>-<digest>``, keyed by the normalised URL
(launcher/core/repos.py), so every spelling of one URL shares one clone. It is host-only (no
run sees the folder; runs get worktrees of it like of any repository) and made by host git
with the host's credentials: git's credential helper, or ``GIT_ASKPASS`` / ``GIT_SSH`` /
``GIT_SSH_COMMAND`` from launcher's own environment. Every other ``GIT_*`` variable is stripped
(``adapters.git.host_git_env``), git runs from ``/``, and every object fetched is fsck-checked.

A clone is a bare clone given a work tree (``core.bare=false``, nothing checked out): it has
the ``.git`` folder launcher adds worktrees to, with the remote's branches as its own
(``refs/heads/*``), so a task's base (``HEAD``, ``main``) means the remote's, as of the last
fetch. Run branches (``refs/heads/launcher/*``) are never fetched over: what a run made here
stays as the run left it, whatever the remote holds under that name.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from launcher.adapters.faults import fault_point
from launcher.adapters.git import Repository, host_git_env
from launcher.adapters.locks import file_lock
from launcher.errors import GitError, GitLockContentionError, InvalidInputError

FETCH_ATTEMPTS = 4
# A first clone of a big repository can take minutes; the others wait for it, not fail.
CLONE_LOCK_TIMEOUT_S = 900.0
# git reports network trouble only in prose (curl's and ssh's words); nothing else is retried.
_TRANSIENT = re.compile(
    r"Could not resolve host|Temporary failure in name resolution|Connection (?:refused|reset|timed out)"
    r"|Failed to connect|Operation timed out|early EOF|remote end hung up unexpectedly|RPC failed"
    r"|Empty reply from server|returned error: (?:408|429|5\d\d)|unexpected disconnect|ssh_exchange_identification"
    r"|kex_exchange_identification|GnuTLS recv error|SSL_read|TLS connection was non-properly terminated",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(://)[^/@\s]+@")
_FETCH_REFSPECS = (
    "+refs/heads/*:refs/heads/*",
    "^refs/heads/launcher/*",
    "+refs/tags/*:refs/tags/*",
)
_SETTINGS = (
    ("core.bare", "false"),
    ("transfer.fsckObjects", "true"),
    # Runs mount the object store read-only as their alternate: a repack under a live run
    # would take its packs away. Nothing here ever collects garbage on its own.
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
)


class _TransientGitError(GitError):
    """A network failure worth another attempt."""


def folder_name(key: str) -> str:
    """The clone's folder for a normalised URL: readable, and unique by its digest."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    tail = re.sub(r"[^A-Za-z0-9._-]+", "-", key.rstrip("/").rsplit("/", 1)[-1]).strip(".-")[:40] or "repo"
    return f"{tail}-{digest[:16]}"


def _scrub(text: str) -> str:
    return _USERINFO.sub(r"\1", text)


class CloneCache:
    def __init__(
        self,
        clones_dir: Path,
        locks_dir: Path,
        *,
        attempts: int = FETCH_ATTEMPTS,
        wait_max: float = 10.0,
        lock_timeout: float = CLONE_LOCK_TIMEOUT_S,
    ) -> None:
        self.clones_dir = clones_dir
        self.locks_dir = locks_dir
        self.attempts = attempts
        self.wait_max = wait_max
        self.lock_timeout = lock_timeout

    def remote_url(self, toplevel: Path) -> str | None:
        repo = Repository.open(toplevel, lock_dir=self.locks_dir)
        origin = repo.config_get("remote.origin.url")
        if origin:
            return origin
        proc = repo.git("config", "--get-regexp", r"^remote\..*\.url$", check=False)
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            _key, _, value = line.partition(" ")
            if value:
                return value
        return None

    def path_of(self, key: str) -> Path:
        return self.clones_dir / folder_name(key)

    def holds(self, path: Path) -> bool:
        return path.resolve().is_relative_to(self.clones_dir.resolve())

    def sync(self, url: str, key: str) -> Path:
        folder = self.path_of(key)
        lock = self.locks_dir / "clones" / f"{folder.name}.lock"
        # One lock per clone, held from "is it there?" to the end of the fetch: a second
        # process waits and then only fetches; it never clones beside the first.
        with file_lock(lock, timeout=self.lock_timeout, guards="repository"):
            if folder.is_symlink() or (folder.exists() and not (folder / ".git").is_dir()):
                raise InvalidInputError(
                    f"{folder} is in the clone cache but is no clone launcher made",
                    hint="remove it; the next run clones it again",
                )
            if not folder.exists():
                self._clone(url, folder)  # as fresh as a fetch
                return folder
            repo = Repository.open(folder, lock_dir=self.locks_dir)
            # The repository's own lock as well: worktrees are added to this clone under it.
            with repo.locked():
                self._retrying(lambda: self._fetch(repo.git_dir))
        return folder

    # -- git -------------------------------------------------------------------------

    def _clone(self, url: str, folder: Path) -> None:
        self.clones_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.clones_dir.glob(f".{folder.name}.*"):
            shutil.rmtree(stale, ignore_errors=True)  # a clone killed half-way, under this same lock
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=self.clones_dir))
        try:
            git_dir = staging / ".git"
            self._retrying(lambda: self._clone_once(url, git_dir))
            for key, value in _SETTINGS:
                self._git(git_dir, "config", key, value)
            self._git(git_dir, "config", "--unset-all", "remote.origin.fetch", check=False)
            for refspec in _FETCH_REFSPECS:
                self._git(git_dir, "config", "--add", "remote.origin.fetch", refspec)
            # Only now under its real name: a folder there is always a whole clone.
            os.rename(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise

    def _clone_once(self, url: str, git_dir: Path) -> None:
        fault_point("git.clone-cache-clone")
        shutil.rmtree(git_dir, ignore_errors=True)
        self._git(
            None,
            "-c",
            "transfer.fsckObjects=true",
            "clone",
            "--bare",
            # Through git's transport even for a local path: every object is checked, none shared.
            "--no-local",
            "--quiet",
            "--",
            url,
            str(git_dir),
        )

    def _fetch(self, git_dir: Path) -> None:
        fault_point("git.clone-cache-fetch")
        self._git(
            git_dir,
            "-c",
            "transfer.fsckObjects=true",
            "-c",
            "gc.auto=0",
            "-c",
            "maintenance.auto=false",
            "fetch",
            "--quiet",
            # HEAD's branch is the remote's: nothing is checked out in the clone's own folder.
            "--update-head-ok",
            "--no-recurse-submodules",
            "origin",
        )

    def _retrying(self, body: Callable[[], None]) -> None:
        retrying = Retrying(
            retry=retry_if_exception_type((_TransientGitError, GitLockContentionError)),
            stop=stop_after_attempt(self.attempts),
            wait=wait_random_exponential(multiplier=0.5, max=self.wait_max),
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    body()
        except _TransientGitError as exc:
            raise GitError(f"{exc.message} (gave up after {self.attempts} attempts)", hint=exc.hint) from None

    def _git(self, git_dir: Path | None, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        cmd = ["git", *([f"--git-dir={git_dir}"] if git_dir is not None else []), *args]
        try:
            proc = subprocess.run(
                cmd, cwd="/", env=host_git_env(auth=True), capture_output=True, check=False, stdin=subprocess.DEVNULL
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed on this machine") from exc
        if check and proc.returncode != 0:
            stderr = _scrub(proc.stderr.decode("utf-8", "replace").strip())
            verb = next((a for a in args if not a.startswith("-") and "=" not in a), "git")
            message = f"git {verb} failed for the clone cache: {stderr}"
            if _TRANSIENT.search(stderr):
                raise _TransientGitError(message, hint="a network failure; launcher retried it")
            if "Unable to create" in stderr and ".lock" in stderr:
                raise GitLockContentionError(message)
            raise GitError(
                message,
                hint="host git clones and fetches with the host's credentials: credential helper, GIT_ASKPASS, ssh",
            )
        return proc

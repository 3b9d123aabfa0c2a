"""The host's `git push` of a run's work: compare-and-set on every remote ref, the host's credentials.

Host git rules as in ``adapters.git``: ``--git-dir`` of the real repository, run from ``/``, ``GIT_*``
variables stripped (all but the host's own ways to authenticate: ``GIT_ASKPASS``, ``GIT_SSH``,
``GIT_SSH_COMMAND``; ``host_git_env(auth=True)``), as the repository's owner when launcher runs as root.

A token (``[publish] token_env``) reaches git through an askpass helper written into a fresh 0700
folder under the host's temp dir (no run mounts it), removed after the push. The helper holds no
secret: it prints a variable that only the git process's own environment carries. Git's credential
helpers are switched off for that push, so none of them stores the token.

git reports push results per ref on stdout (``--porcelain``), but why it never got that far only in
prose on stderr: connection failures and 5xx answers are recognised by their fixed wording.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from launcher.adapters.git import Owner, host_git_env
from launcher.core.ports.publisher import Credential, PushAttempt, RefResult, RefStatus, RefUpdate
from launcher.core.ports.repo import RepoPort
from launcher.errors import GitError, InvalidInputError, PublishError

if TYPE_CHECKING:
    from launcher.core.ports.forge import ForgePort

PUSH_TIMEOUT_S = 300.0
# GitHub's convention for a token over HTTPS; a URL naming its own user keeps that user.
TOKEN_USER = "x-access-token"  # noqa: S105 - a user name, not a secret; [publish] token_user
_TRANSIENT = re.compile(
    r"Connection refused|Connection reset|Connection timed out|Operation timed out|timed out|"
    r"Could not resolve host|Failed to connect|Empty reply from server|RPC failed|early EOF|"
    r"unexpected disconnect|the remote end hung up unexpectedly|returned error: 5\d\d|HTTP 5\d\d|"
    r"Recv failure|SSL_read|gnutls_handshake|remote: Internal Server Error",
    re.IGNORECASE,
)
_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]*@")
_ASKPASS = """#!/bin/sh
# launcher's askpass for one host-side push: the secret is in this process's environment only.
case "$1" in
  Username*) printf '%s\\n' "$LAUNCHER_PUSH_USER" ;;
  *) printf '%s\\n' "$LAUNCHER_PUSH_TOKEN" ;;
esac
"""


def strip_credentials(url: str) -> str:
    """A URL without its user and password (``https://user:tok@host/x`` -> ``https://host/x``)."""
    return _USERINFO.sub(lambda m: m.group("scheme"), url)


def is_url(remote: str) -> bool:
    """A URL (or scp-like ``host:path``, or a local path) rather than a remote's name."""
    return "://" in remote or remote.startswith(("/", "./", "../")) or re.match(r"^[^/:]+@?[^/:]*:", remote) is not None


class GitPublisher:
    """Pushes with host git; opens forges from ``launcher.adapters.forge`` when asked."""

    def resolve_remote(self, repo: RepoPort, remote: str) -> str:
        if not remote or remote.startswith("-") or "\x00" in remote:
            raise InvalidInputError(f"invalid remote {remote!r}")
        if is_url(remote):
            return remote
        url = repo.config_get(f"remote.{remote}.pushurl") or repo.config_get(f"remote.{remote}.url")
        if not url:
            raise PublishError(
                f"{repo.toplevel} has no remote named {remote!r}",
                hint=f"add it (git remote add {remote} URL), or name a URL: --remote URL or [publish] remote",
            )
        return url

    def push(self, repo: RepoPort, remote: str, updates: list[RefUpdate], credential: Credential) -> PushAttempt:
        if not updates:
            return PushAttempt()
        args = ["push", "--porcelain", "--atomic", "--no-verify", "--no-recurse-submodules"]
        args += [f"--force-with-lease={u.remote_ref}:{u.expect}" for u in updates]
        args += ["--end-of-options", remote, *(f"{u.sha}:{u.remote_ref}" for u in updates)]
        try:
            proc = self._git(repo, args, remote, credential)
        except subprocess.TimeoutExpired:
            return PushAttempt(error=f"git push timed out after {PUSH_TIMEOUT_S:g} s", transient=True)
        token = credential.token.get_secret_value() if credential.token else None
        out = _scrub(proc.stdout.decode("utf-8", "replace"), token)
        err = _scrub(proc.stderr.decode("utf-8", "replace"), token).strip()
        refs = _porcelain(out, updates)
        if proc.returncode == 0 and refs:
            return PushAttempt(refs=refs)
        if refs and any(r.status not in {"new", "updated", "up-to-date"} for r in refs):
            # The remote answered about the refs: a refusal, never worth repeating as it is.
            return PushAttempt(refs=refs, error=_refusal(refs, err))
        why = _last_lines(err) or f"git push exited {proc.returncode}"
        return PushAttempt(refs=refs, error=why, transient=_TRANSIENT.search(err) is not None)

    def default_branch(self, repo: RepoPort, remote: str, credential: Credential) -> str | None:
        try:
            proc = self._git(repo, ["ls-remote", "--symref", "--end-of-options", remote, "HEAD"], remote, credential)
        except subprocess.TimeoutExpired:
            return None
        for line in proc.stdout.decode("utf-8", "replace").splitlines():
            if line.startswith("ref: refs/heads/") and line.endswith("\tHEAD"):
                return line[len("ref: refs/heads/") : -len("\tHEAD")]
        return None

    def diffstat(self, repo: RepoPort, base: str, tip: str) -> str:
        proc = self._git(repo, ["-c", "core.bigFileThreshold=1m", "diff", "--stat", "--no-color", base, tip])
        if proc.returncode != 0:
            raise GitError(f"git diff --stat failed in {repo.toplevel}: {proc.stderr.decode('utf-8', 'replace')}")
        return proc.stdout.decode("utf-8", "replace")

    def open_forge(self, kind: str, api_url: str, remote_url: str, token: str) -> ForgePort:
        from launcher.adapters.forge import open_forge

        return open_forge(kind, api_url, remote_url, token)

    # -- running git ---------------------------------------------------------------------

    def _git(
        self, repo: RepoPort, args: list[str], remote: str | None = None, credential: Credential | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        info = repo.git_dir.stat()
        owner = Owner(info.st_uid, info.st_gid) if os.geteuid() == 0 and info.st_uid != 0 else None
        env = host_git_env(owner, auth=True)
        token = credential.token.get_secret_value() if credential and credential.token else None
        user = credential.user if credential else TOKEN_USER
        with _askpass(owner, remote or "", token, user) as extra:
            cmd = ["git", f"--git-dir={repo.git_dir}", *extra.args, *args]
            env.update(extra.env)
            try:
                return subprocess.run(
                    cmd,
                    cwd="/",
                    env=env,
                    capture_output=True,
                    check=False,
                    timeout=PUSH_TIMEOUT_S,
                    user=owner.uid if owner else None,
                    group=owner.gid if owner else None,
                    extra_groups=[] if owner else None,
                )
            except FileNotFoundError as exc:
                raise GitError("git is not installed on this machine") from exc


class _Extra:
    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.args, self.env = args, env


@contextlib.contextmanager
def _askpass(owner: Owner | None, remote: str, token: str | None, user: str) -> Iterator[_Extra]:
    """With a token: git asks a host-only helper, and no credential helper sees (or stores) it."""
    if token is None:
        yield _Extra([], {})
        return
    folder = Path(tempfile.mkdtemp(prefix="launcher-askpass-"))  # 0700, the host's temp dir
    try:
        helper = folder / "askpass"
        fd = os.open(helper, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o700)
        with os.fdopen(fd, "w") as handle:
            handle.write(_ASKPASS)
        if owner is not None:
            os.chown(folder, owner.uid, owner.gid)
            os.chown(helper, owner.uid, owner.gid)
        env = {
            "GIT_ASKPASS": str(helper),
            "LAUNCHER_PUSH_USER": user,
            "LAUNCHER_PUSH_TOKEN": token,
        }
        # An empty helper list: no configured helper answers for, or stores, this token.
        yield _Extra(["-c", "credential.helper="], env)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


_FLAGS: dict[str, RefStatus] = {"*": "new", " ": "updated", "+": "updated", "=": "up-to-date", "-": "updated"}


def _porcelain(out: str, updates: list[RefUpdate]) -> list[RefResult]:
    """``git push --porcelain``: ``<flag>\\t<from>:<to>\\t<summary> (<reason>)`` per ref."""
    wanted = {u.remote_ref for u in updates}
    found: list[RefResult] = []
    for line in out.splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or len(parts[0]) != 1:
            continue
        flag, spec, summary = parts[0], parts[1], "\t".join(parts[2:])
        ref = spec.rpartition(":")[2]
        if ref not in wanted:
            continue
        reason = summary[summary.find("(") + 1 : summary.rfind(")")] if "(" in summary else summary
        status: RefStatus = _FLAGS.get(flag, "error")
        if flag == "!":
            if "stale info" in summary or "fetch first" in summary or "non-fast-forward" in summary:
                status = "lease"
            elif "remote rejected" in summary:
                status = "remote-rejected"
            elif "atomic push failed" in summary:
                status = "error"  # refused only because another ref of the same push was
            else:
                status = "rejected"
        found.append(RefResult(remote_ref=ref, status=status, reason=reason.strip()))
    return found


def _refusal(refs: list[RefResult], err: str) -> str:
    lease = [r.remote_ref for r in refs if r.status == "lease"]
    if lease:
        return (
            f"{', '.join(lease)} on the remote is not where launcher left it (someone else moved it); it was left alone"
        )
    bad = [f"{r.remote_ref}: {r.reason or r.status}" for r in refs if r.status not in {"new", "updated", "up-to-date"}]
    return "the remote refused " + "; ".join(bad) + (f" ({_last_lines(err)})" if err else "")


def _scrub(text: str, token: str | None) -> str:
    text = strip_credentials(text)
    return text.replace(token, "***") if token else text


def _last_lines(err: str, n: int = 3) -> str:
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("hint:")]
    return " / ".join(lines[-n:])[:1000]

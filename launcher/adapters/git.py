"""Host-side git: worktrees, branches, bundles. Never trusts anything a run wrote.

Every call names ``--git-dir`` of the real repository, runs from ``/`` (a folder no agent
can write), with ``GIT_*`` variables stripped, so neither a planted ``.git`` nor an
agent-written config can redirect it. When launcher runs as root on a repository owned by
someone else, git runs as that owner: what it creates belongs to them, and git's ownership
check never needs ``safe.directory``.
"""

from __future__ import annotations

import os
import pwd
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from launcher.adapters.faults import fault_point
from launcher.adapters.locks import file_lock
from launcher.errors import GitError, GitLockContentionError, InvalidInputError

# git reports lock contention only in prose; this is its exact wording for every lock file
# (index.lock, config.lock, ref locks), and nothing else uses it.
_LOCK_CONTENTION = re.compile(r"Unable to create '[^']+\.lock': File exists|cannot lock ref")
GIT_RETRY_ATTEMPTS = 6
# How long a git mutation waits for the repository's lock (another run adding its worktree).
REPO_LOCK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Owner:
    uid: int
    gid: int


@dataclass(frozen=True)
class WorktreeEntry:
    path: str
    head: str | None
    branch: str | None
    prunable: bool


# The host's own ways to authenticate: kept where git talks to a remote (a clone, a fetch, a
# push). They come from launcher's own environment, which no run can write.
HOST_AUTH_VARIABLES = ("GIT_ASKPASS", "GIT_SSH", "GIT_SSH_COMMAND")


def host_git_env(owner: Owner | None = None, *, auth: bool = False) -> dict[str, str]:
    """The environment every host-side git runs with: launcher's own, every ``GIT_*`` stripped.

    The host never runs git config a run wrote, and ``GIT_*`` from the caller's environment
    could redirect git just as well (``GIT_DIR``, ``GIT_CONFIG_*``, ``GIT_EXEC_PATH``,
    ``GIT_INDEX_FILE``...), so none of it reaches git, and git never prompts (no terminal to
    answer it). ``auth``: keep ``HOST_AUTH_VARIABLES``, for git that talks to a remote with the
    host's credentials; local git (worktrees, bundles) needs none. ``owner``: git runs as that
    user, so it reads that user's ``~/.gitconfig``, not the caller's.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    if auth:
        env.update({k: os.environ[k] for k in HOST_AUTH_VARIABLES if k in os.environ})
    env["GIT_TERMINAL_PROMPT"] = "0"
    env["LC_ALL"] = "C"
    if owner is not None:
        try:
            env["HOME"] = pwd.getpwuid(owner.uid).pw_dir
        except KeyError:
            env["HOME"] = "/nonexistent"
        env.pop("XDG_CONFIG_HOME", None)
    return env


class Repository:
    """A repository on the host, addressed by its common git directory."""

    def __init__(self, toplevel: Path, git_dir: Path, lock_dir: Path) -> None:
        self.toplevel = toplevel
        self.git_dir = git_dir
        info = git_dir.stat()
        self.owner = Owner(info.st_uid, info.st_gid)
        self._lock_path = lock_dir / "repos" / f"{_lock_name(git_dir)}.lock"

    @property
    def objects_dir(self) -> Path:
        return self.git_dir / "objects"

    @property
    def owner_ids(self) -> tuple[int, int]:
        return self.owner.uid, self.owner.gid

    @property
    def name(self) -> str:
        return self.toplevel.name

    @classmethod
    def open(cls, path: str | Path, *, lock_dir: Path) -> Repository:
        """Find the repository that contains ``path`` (a path the user named)."""
        start = Path(path).expanduser()
        try:
            str(start).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"repository path {str(start).encode('utf-8', 'backslashreplace').decode()} is not valid UTF-8",
                hint="task files and the coordinator store paths as UTF-8; rename the folder",
            ) from None
        if not start.exists():
            raise InvalidInputError(f"repository path {start} does not exist")
        start = start.resolve()
        for candidate in (start, *start.parents):
            dotgit = candidate / ".git"
            if dotgit.is_dir() and not dotgit.is_symlink():
                return cls(candidate, dotgit, lock_dir)
            if dotgit.is_file():
                raise InvalidInputError(
                    f"{candidate} is a linked worktree or submodule, not a main checkout",
                    hint="pass the path of the repository's main checkout",
                )
            if (candidate / "HEAD").is_file() and (candidate / "objects").is_dir() and candidate == start:
                raise InvalidInputError(
                    f"{candidate} is a bare repository; launcher needs a repository with a working tree",
                )
        raise InvalidInputError(f"{start} is not inside a git repository", hint="pass --repo PATH of a git checkout")

    # -- running git ---------------------------------------------------------------------

    def _run_as(self) -> Owner | None:
        if os.geteuid() == 0 and self.owner.uid != 0:
            return self.owner
        return None

    def git(
        self,
        *args: str,
        check: bool = True,
        input_bytes: bytes | None = None,
        git_dir: Path | None = None,
        umask: int = -1,
    ) -> subprocess.CompletedProcess[bytes]:
        owner = self._run_as()
        cmd = ["git", f"--git-dir={git_dir or self.git_dir}", *args]
        try:
            proc = subprocess.run(
                cmd,
                cwd="/",
                env=host_git_env(owner),
                input=input_bytes,
                capture_output=True,
                check=False,
                user=owner.uid if owner else None,
                group=owner.gid if owner else None,
                extra_groups=[] if owner else None,
                umask=umask,
            )
        except FileNotFoundError as exc:
            raise GitError("git is not installed on this machine") from exc
        if check and proc.returncode != 0:
            stderr = proc.stderr.decode("utf-8", "replace").strip()
            if _LOCK_CONTENTION.search(stderr):
                raise GitLockContentionError(f"git {args[0]}: {stderr}")
            raise GitError(f"git {' '.join(args[:2])} failed in {self.toplevel}: {stderr}")
        return proc

    def git_out(self, *args: str) -> str:
        return self.git(*args).stdout.decode("utf-8", "replace").strip()

    def mutate(self, *args: str, umask: int = -1) -> subprocess.CompletedProcess[bytes]:
        """A git call that changes the repository: serialised per repository, lock errors retried."""
        retrying = Retrying(
            retry=retry_if_exception_type(GitLockContentionError),
            stop=stop_after_attempt(GIT_RETRY_ATTEMPTS),
            wait=wait_random_exponential(multiplier=0.05, max=2.0),
            reraise=True,
        )
        for attempt in retrying:
            with attempt, self.locked():
                fault_point(f"git.{args[0]}")
                return self.git(*args, umask=umask)
        raise AssertionError("unreachable")  # pragma: no cover

    @contextmanager
    def locked(self) -> Iterator[None]:
        with file_lock(self._lock_path, timeout=REPO_LOCK_TIMEOUT_S, guards="repository"):
            yield

    # -- queries -------------------------------------------------------------------------

    def has_commits(self) -> bool:
        return self.git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", check=False).returncode == 0

    def is_folder(self, commit: str, path: str) -> bool:
        proc = self.git("cat-file", "-t", f"{commit}:{path}", check=False)
        return proc.returncode == 0 and proc.stdout.decode().strip() == "tree"

    def resolve_commit(self, ref: str) -> str:
        if ref.startswith("-") or "\x00" in ref:
            raise InvalidInputError(f"invalid base ref {ref!r}")
        proc = self.git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}", check=False)
        if proc.returncode != 0:
            if not self.has_commits():
                raise InvalidInputError(f"repository {self.toplevel} has no commits yet", hint="commit something first")
            raise InvalidInputError(f"unknown base ref {ref!r} in {self.toplevel}")
        return proc.stdout.decode().strip()

    def symbolic_branch(self, ref: str) -> str | None:
        """The branch name a ref denotes (``HEAD`` -> ``main``), or None."""
        if ref.startswith("-"):
            return None
        proc = self.git("rev-parse", "--symbolic-full-name", ref, check=False)
        full = proc.stdout.decode().strip()
        return full.removeprefix("refs/heads/") if full.startswith("refs/heads/") else None

    def ref_exists(self, ref: str) -> bool:
        return self.git("show-ref", "--verify", "--quiet", ref, check=False).returncode == 0

    def check_ref_format(self, branch: str) -> bool:
        return self.git("check-ref-format", "--branch", branch, check=False).returncode == 0

    def config_get(self, key: str) -> str | None:
        proc = self.git("config", "--get", key, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def worktrees(self) -> list[WorktreeEntry]:
        out = self.git_out("worktree", "list", "--porcelain")
        entries: list[WorktreeEntry] = []
        for block in out.split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, _, value = line.partition(" ")
                fields[key] = value
            if "worktree" in fields:
                entries.append(
                    WorktreeEntry(
                        path=fields["worktree"],
                        head=fields.get("HEAD"),
                        branch=fields.get("branch", "").removeprefix("refs/heads/") or None,
                        prunable="prunable" in fields,
                    )
                )
        return entries

    def worktree_paths(self) -> list[str]:
        return [entry.path for entry in self.worktrees()]

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.git("merge-base", "--is-ancestor", ancestor, descendant, check=False).returncode == 0

    def commits_between(self, base: str, tip: str) -> list[dict[str, str]]:
        out = self.git_out("log", "--format=%H%x00%s", f"{base}..{tip}")
        commits = []
        for line in out.splitlines():
            sha, _, subject = line.partition("\x00")
            commits.append({"sha": sha, "subject": subject})
        return commits

    def diff_summary(self, base: str, tip: str) -> dict[str, object]:
        # Blobs over the threshold count as binary without being read: git keeps every blob it
        # reads for a diff in memory, so a run's big files would otherwise cost their size.
        numstat = self.git_out("-c", "core.bigFileThreshold=1m", "diff", "--numstat", "--no-renames", base, tip)
        files, added, deleted = [], 0, 0
        for line in numstat.splitlines():
            a, d, name = line.split("\t", 2)
            files.append(name)
            added += int(a) if a.isdigit() else 0
            deleted += int(d) if d.isdigit() else 0
        return {"files_changed": len(files), "insertions": added, "deletions": deleted, "files": files[:200]}

    # -- mutations -----------------------------------------------------------------------

    def add_worktree(self, path: Path, branch: str, base_sha: str) -> None:
        """A new branch and its worktree, without checkout: the run checks out as its own uid."""
        if not self.check_ref_format(branch):
            raise InvalidInputError(f"git refuses the branch name {branch!r}")
        if self.ref_exists(f"refs/heads/{branch}"):
            raise GitError(f"branch {branch} already exists; run branches are never reused")
        self.mutate("worktree", "add", "--no-checkout", "-b", branch, str(path), base_sha)

    def add_detached_worktree(self, path: Path, base_sha: str) -> None:
        self.mutate("worktree", "add", "--no-checkout", "--detach", str(path), base_sha)

    def adopt_worktree(self, source: Path, path: Path, branch: str, base_sha: str) -> None:
        """Move a pool slot's worktree from ``source`` to ``path`` and give it the run's new branch."""
        if not self.check_ref_format(branch):
            raise InvalidInputError(f"git refuses the branch name {branch!r}")
        admin = self.worktree_admin(source)
        if admin is None:
            raise GitError(f"{source} is not a worktree of {self.toplevel}")
        # An all-zero old value: create only, never move a branch that exists.
        try:
            self.mutate("update-ref", f"refs/heads/{branch}", base_sha, "0" * len(base_sha))
        except GitError as exc:
            raise GitError(f"branch {branch} already exists; run branches are never reused") from exc
        # Under the repository's lock: between the move and the repair, the worktree's record
        # names a folder that is gone, and a `worktree prune` (another run settling) would drop it.
        with self.locked():
            os.rename(source, path)
            self.git("worktree", "repair", str(path))
            self.git("symbolic-ref", "HEAD", f"refs/heads/{branch}", git_dir=admin)

    def worktree_admin(self, path: Path) -> Path | None:
        """The folder in the repository that describes the worktree at ``path`` (from its .git file)."""
        try:
            text = (path / ".git").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        if not text.startswith("gitdir: "):
            return None
        admin = Path(text[len("gitdir: ") :].strip())
        return admin if admin.is_relative_to(self.git_dir / "worktrees") else None

    def remove_worktree(self, path: Path) -> None:
        with self.locked():
            proc = self.git("worktree", "remove", "--force", "--force", str(path), check=False)
            if proc.returncode != 0:
                # The folder may already be gone or not a worktree any more; prune forgets it.
                self._prune_holding_lock()

    def retire_worktree(self, path: Path, trash: Path) -> None:
        """Take a run's worktree folder out of the repository: moved to ``trash`` and forgotten.

        Under the repository's lock, because another run's `git worktree repair` (a pool slot
        taken) rewrites the `.git` file of every worktree whose folder exists: into a folder
        being deleted at that moment, which then cannot be deleted and keeps its record. A
        rename is atomic and quick, so the lock is held for that and the prune only; the
        caller deletes ``trash`` afterwards, outside the lock.
        """
        with self.locked():
            if path.exists() or path.is_symlink():
                os.rename(path, trash)
            self._prune_holding_lock()

    def prune_worktrees(self) -> None:
        with self.locked():
            self._prune_holding_lock()

    def _prune_holding_lock(self) -> None:
        """Forget worktrees whose folders are gone, including ones a killed `worktree add`
        left locked ("initializing"), which plain `git worktree prune` skips.

        The caller holds the repository lock: `worktree list` fails on a worktree that
        another run is adding or pruning at that moment.
        """
        for entry in self.worktrees():
            if entry.path != str(self.toplevel) and not Path(entry.path).exists():
                self.git("worktree", "unlock", entry.path, check=False)
        self.git("worktree", "prune")

    def verify_bundle(self, bundle: Path) -> list[tuple[str, str]]:
        """``git bundle verify`` then its heads as (sha, ref) pairs.

        Under the repository's lock: verify walks every worktree's HEAD, and a worktree that
        another run is adding at that moment has none yet.
        """
        with self.locked():
            self.git("bundle", "verify", "--quiet", str(bundle))
            listing = self.git_out("bundle", "list-heads", str(bundle))
        heads = []
        for line in listing.splitlines():
            sha, _, ref = line.partition(" ")
            heads.append((sha, ref))
        return heads

    def fetch_bundle(self, bundle: Path, refspecs: list[str]) -> None:
        """Fetch ``refspecs`` from a bundle, every object fsck-checked, all refs or none."""
        self.mutate(
            "-c",
            "transfer.fsckObjects=true",
            "fetch",
            "--atomic",
            "--no-tags",
            "--no-write-fetch-head",
            "--no-recurse-submodules",
            "--no-auto-gc",
            "--quiet",
            str(bundle),
            *refspecs,
        )

    def refs_under(self, prefix: str) -> dict[str, str]:
        out = self.git_out("for-each-ref", "--format=%(refname) %(objectname)", prefix)
        found = {}
        for line in out.splitlines():
            ref, _, sha = line.partition(" ")
            found[ref] = sha
        return found

    def update_ref(self, ref: str, new: str, old: str) -> None:
        """Compare-and-set a ref: moves only if it still points at ``old``."""
        self.mutate("update-ref", ref, new, old)

    def ref_value(self, ref: str) -> str | None:
        proc = self.git("rev-parse", "--verify", "--quiet", ref, check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def delete_ref(self, ref: str) -> None:
        self.git("update-ref", "-d", ref, check=False)

    # -- a run's commits without its .case/ scope ---------------------------------------------

    def rewrite_without(self, base: str, tip: str, name: str) -> tuple[str, dict[str, str]]:
        """The commits of ``base..tip`` with the top-level entry ``name`` as it is in ``base``.

        Every commit is checked (one batch query), not a sample of paths; only those whose
        ``name`` differs from the base's, and their descendants, are rewritten, keeping author,
        committer and message (a signature, no longer valid, is dropped). The new tip, and
        original -> new for each rewritten commit. Deterministic: the same input, the same ids.
        """
        listing = self.git_out("rev-list", "--reverse", "--topo-order", "--parents", tip, f"^{base}")
        commits = [line.split() for line in listing.splitlines() if line]
        if not commits:
            return tip, {}
        wanted = self._entry_id(base, name)
        queries = "".join(f"{sha}:{name}\n" for sha, *_ in commits).encode()
        answers = self.git("cat-file", "--batch-check=%(objectname)", input_bytes=queries).stdout.decode()
        ids = [line if not line.endswith(" missing") else None for line in answers.splitlines()]
        rewritten: dict[str, str] = {}
        for (sha, *parents), entry in zip(commits, ids, strict=True):
            new_parents = [rewritten.get(p, p) for p in parents]
            if entry == wanted and new_parents == parents:
                continue
            tree = self.tree_with_entry_of(sha, name, base)
            rewritten[sha] = self._recommit(sha, tree, new_parents)
        return rewritten.get(tip, tip), rewritten

    def tree_with_entry_of(self, commit: str, name: str, like: str) -> str:
        """The tree of ``commit`` with its top-level entry ``name`` as in ``like`` (or absent)."""
        own = self.git("ls-tree", "-z", "--full-tree", commit).stdout.split(b"\0")
        kept = [entry for entry in own if entry and entry.split(b"\t", 1)[1] != name.encode()]
        theirs = self.git("ls-tree", "-z", "--full-tree", like, "--", name).stdout.split(b"\0")
        entries = kept + [entry for entry in theirs if entry]
        return self.git("mktree", "-z", input_bytes=b"".join(e + b"\0" for e in entries)).stdout.decode().strip()

    def _entry_id(self, commit: str, name: str) -> str | None:
        proc = self.git("rev-parse", "--verify", "--quiet", f"{commit}:{name}", check=False)
        return proc.stdout.decode().strip() if proc.returncode == 0 else None

    def _recommit(self, sha: str, tree: str, parents: list[str]) -> str:
        raw = self.git("cat-file", "commit", sha).stdout
        header, sep, message = raw.partition(b"\n\n")
        lines, skipping = [f"tree {tree}".encode(), *(f"parent {p}".encode() for p in parents)], False
        for line in header.split(b"\n"):
            if line.startswith(b" ") and skipping:
                continue  # the continuation of a dropped multi-line header
            skipping = line.startswith((b"gpgsig ", b"gpgsig-sha256 "))
            if skipping or line.startswith((b"tree ", b"parent ")):
                continue
            lines.append(line)
        body = b"\n".join(lines) + sep + message
        return self.git("hash-object", "-t", "commit", "-w", "--stdin", input_bytes=body).stdout.decode().strip()

    # -- a kept worktree: the host's own checkout -----------------------------------------------

    def check_out_worktree(self, path: Path, branch: str) -> None:
        """A new worktree of ``branch`` at ``path`` (an empty folder), checked out by host git.

        From the repository's own (fsck-checked) objects: git writes no ``.git`` path from a
        tree, and the files get the modes git gives them (umask 022: nothing world-writable).
        """
        self.mutate("worktree", "add", "--quiet", str(path), branch, umask=0o022)

    def apply_tree(self, path: Path, tree: str) -> None:
        """Make the files of the worktree at ``path`` those of ``tree``; its index stays at HEAD.

        How captured uncommitted work goes back into a kept worktree: the changes show as
        uncommitted, the new files as untracked, exactly as the agent left them.
        """
        admin = self.worktree_admin(path)
        if admin is None:
            raise GitError(f"{path} is not a worktree of {self.toplevel}")
        work_tree = f"--work-tree={path}"
        self.git(work_tree, "read-tree", "-m", "-u", "HEAD", tree, git_dir=admin, umask=0o022)
        self.git(work_tree, "read-tree", "-m", "HEAD", git_dir=admin)
        # Exit 1 means "files differ from the index", which is what was wanted.
        self.git(work_tree, "update-index", "-q", "--refresh", git_dir=admin, check=False)


def _lock_name(git_dir: Path) -> str:
    import hashlib

    return hashlib.sha256(str(git_dir).encode()).hexdigest()[:24]

"""Host git for a run's result in a person's repository (``ResultsGit``), on top of ``Repository``.

Every call goes through ``Repository.git``: ``--git-dir`` of the real repository, run from
``/``, ``GIT_*`` stripped, as the repository's owner when launcher is root. Where a work tree
is needed it is the main checkout's (``--work-tree``), never a run's worktree. Hooks are off
(``core.hooksPath=/dev/null``) for everything that writes: a hook that runs the project's
tooling (a linter, a test runner, an install step) would run the agent's code on the host.
Files are written with umask 022, as a kept worktree's are: nothing the run made becomes
world-writable. Diffs never run external diff drivers or textconv (``--no-ext-diff --no-textconv``): the run's
``.gitattributes`` would choose which of them runs.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from launcher.adapters.git import Repository
from launcher.core.ports.results import FileChange, MergeAttempt, MergeMode
from launcher.errors import GitError

_NO_HOOKS = ("-c", "core.hooksPath=/dev/null")
_PLAIN_DIFF = ("--no-pager", "diff", "--no-ext-diff", "--no-textconv", "--no-color")
# Where git keeps the state of an operation a checkout is in the middle of.
_IN_PROGRESS = {
    "MERGE_HEAD": "a merge",
    "CHERRY_PICK_HEAD": "a cherry-pick",
    "REVERT_HEAD": "a revert",
    "rebase-merge": "a rebase",
    "rebase-apply": "a rebase or `git am`",
}


def open_results(path: str, *, lock_dir: Path) -> GitResults:
    return GitResults(Repository.open(path, lock_dir=lock_dir))


class GitResults:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo
        self.toplevel = repo.toplevel

    @property
    def owner_ids(self) -> tuple[int, int]:
        return self.repo.owner_ids

    @property
    def _work_tree(self) -> str:
        return f"--work-tree={self.toplevel}"

    def _text(self, *args: str) -> str:
        return self.repo.git(*args).stdout.decode("utf-8", "replace")

    def _nul_list(self, *args: str) -> list[str]:
        raw = self.repo.git(*args).stdout.decode("utf-8", "surrogateescape")
        return [item for item in raw.split("\0") if item]

    # -- queries -------------------------------------------------------------------------

    def ref_value(self, ref: str) -> str | None:
        # Repository.ref_value reads any failure as "no such ref"; here a git that cannot read
        # the repository at all (permissions, corruption) must not look like a pruned branch.
        proc = self.repo.git("rev-parse", "--verify", "--quiet", "--end-of-options", ref, check=False)
        if proc.returncode == 0:
            return proc.stdout.decode().strip()
        if proc.stderr.strip():
            raise GitError(
                f"git cannot read {ref} in {self.toplevel}: {proc.stderr.decode('utf-8', 'replace').strip()}"
            )
        return None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        return self.repo.is_ancestor(ancestor, descendant)

    def commit_count(self, base: str, tip: str) -> int:
        return int(self._text("rev-list", "--count", f"{base}..{tip}").strip() or 0)

    def current_branch(self) -> str | None:
        proc = self.repo.git("symbolic-ref", "--quiet", "HEAD", check=False)
        full = proc.stdout.decode().strip()
        return full.removeprefix("refs/heads/") if proc.returncode == 0 and full.startswith("refs/heads/") else None

    def checked_out(self) -> dict[str, str]:
        return {entry.branch: entry.path for entry in self.repo.worktrees() if entry.branch}

    def refs_under(self, prefix: str) -> dict[str, str]:
        return self.repo.refs_under(prefix)

    # -- diff ----------------------------------------------------------------------------

    def diff(self, base: str, tip: str, *, stat: bool) -> bytes:
        shape = ("--stat=120",) if stat else ()
        return self.repo.git(*_PLAIN_DIFF, *shape, base, tip, "--").stdout

    def numstat(self, base: str, tip: str) -> list[FileChange]:
        # -z: a path is whatever bytes the agent chose, tabs and newlines included.
        fields = self._nul_list(*_PLAIN_DIFF, "--numstat", "-z", "--no-renames", base, tip, "--")
        changes = []
        for field in fields:
            added, deleted, path = field.split("\t", 2)
            changes.append(
                FileChange(
                    path=path,
                    insertions=int(added) if added.isdigit() else None,
                    deletions=int(deleted) if deleted.isdigit() else None,
                )
            )
        return changes

    def changed_paths(self, base: str, tip: str) -> list[str]:
        return self._nul_list(*_PLAIN_DIFF, "--name-only", "-z", "--no-renames", base, tip, "--")

    # -- the main checkout ---------------------------------------------------------------

    def dirty_paths(self) -> list[str]:
        entries = self._nul_list(
            self._work_tree, "status", "--porcelain=v1", "-z", "--untracked-files=no", "--ignore-submodules=none"
        )
        paths, skip_next = [], False
        for entry in entries:
            if skip_next:  # the source path of a rename or copy
                paths.append(entry)
                skip_next = False
                continue
            status, path = entry[:2], entry[3:]
            paths.append(path)
            skip_next = "R" in status or "C" in status
        return paths

    def operation_in_progress(self) -> str | None:
        for name, what in _IN_PROGRESS.items():
            if (self.repo.git_dir / name).exists():
                return what
        return None

    def merge(self, tip: str, *, mode: MergeMode, message: str) -> MergeAttempt:
        flag = {"ff": "--ff", "no-ff": "--no-ff", "squash": "--squash"}[mode]
        wt = self._work_tree
        with self.repo.locked():
            proc = self.repo.git(
                *_NO_HOOKS, wt, "merge", "--no-edit", "--no-autostash", "--no-stat", flag, "-m", message, tip,
                check=False, umask=0o022,
            )  # fmt: skip
            output = (proc.stdout + proc.stderr).decode("utf-8", "replace").strip()
            if proc.returncode == 0 and mode == "squash":
                # --squash stages the result and stops; the commit is the merge.
                proc = self.repo.git(
                    *_NO_HOOKS, wt, "commit", "--quiet", "--no-verify", "-F", "-",
                    input_bytes=message.encode(), check=False,
                )  # fmt: skip
                output = "\n".join(filter(None, [output, (proc.stdout + proc.stderr).decode("utf-8", "replace")]))
            if proc.returncode == 0:
                return MergeAttempt(merged=True, head=self.repo.git_out("rev-parse", "HEAD"), output=output)
            conflicts = self._nul_list(wt, "diff", "--name-only", "-z", "--diff-filter=U")
            aborted = self._undo_merge(mode)
        return MergeAttempt(
            merged=False,
            head=self.repo.git_out("rev-parse", "HEAD"),
            conflicts=conflicts,
            aborted=aborted,
            output=output,
        )

    def _undo_merge(self, mode: MergeMode) -> bool:
        """Take back a merge that stopped half-way; True when the checkout is as it was."""
        wt = self._work_tree
        if (self.repo.git_dir / "MERGE_HEAD").exists():
            self.repo.git(*_NO_HOOKS, wt, "merge", "--abort", check=False, umask=0o022)
        elif mode == "squash" and self._index_differs():
            # A squash records no MERGE_HEAD; `reset --merge` is what `merge --abort` does.
            self.repo.git(*_NO_HOOKS, wt, "reset", "--quiet", "--merge", check=False, umask=0o022)
        return not self.dirty_paths() and self.operation_in_progress() is None

    def _index_differs(self) -> bool:
        return self.repo.git(self._work_tree, "diff-index", "--cached", "--quiet", "HEAD", check=False).returncode != 0

    def fast_forward(self, branch: str, new: str, old: str) -> bool:
        with self.repo.locked():
            if branch in self.checked_out():
                return False
            return self.repo.git("update-ref", f"refs/heads/{branch}", new, old, check=False).returncode == 0

    def conflicts(self, base: str, ours: str, theirs: str) -> list[str] | None:
        proc = self.repo.git(
            "merge-tree", "--write-tree", "--name-only", "--no-messages", "-z", f"--merge-base={base}", ours, theirs,
            check=False,
        )  # fmt: skip
        if proc.returncode == 0:
            return None
        if proc.returncode != 1:
            raise GitError(f"git merge-tree failed in {self.toplevel}: {proc.stderr.decode('utf-8', 'replace')}")
        # The merged tree's id first, then each conflicted path once.
        names = [n for n in proc.stdout.decode("utf-8", "surrogateescape").split("\0")[1:] if n]
        return list(dict.fromkeys(names))

    def apply(self, base: str, tip: str) -> None:
        # Not `git apply`: it writes relative to the current directory (launcher's is /), not
        # to --work-tree. The three-way result as a tree, then a two-tree read-tree from HEAD:
        # all or nothing, it refuses to overwrite local changes or untracked files.
        with self.repo.locked():
            proc = self.repo.git(
                "merge-tree", "--write-tree", "--no-messages", f"--merge-base={base}", "HEAD", tip, check=False
            )
            if proc.returncode != 0:
                why = proc.stderr.decode("utf-8", "replace").strip() or "the changes conflict with HEAD"
                raise GitError(f"git merge-tree failed in {self.toplevel}: {why}")
            tree = proc.stdout.decode().split("\n", 1)[0].strip()
            proc = self.repo.git(self._work_tree, "read-tree", "-m", "-u", "HEAD", tree, umask=0o022, check=False)
        if proc.returncode != 0:
            why = proc.stderr.decode("utf-8", "replace").strip()
            raise GitError(f"the run's changes cannot be applied in {self.toplevel}, nothing was changed: {why}")

    def add_checkout(self, path: Path, tip: str) -> None:
        # git runs as the repository's owner: the folder it fills must be theirs.
        made = not path.exists()
        if made:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.mkdir()
            if os.geteuid() == 0:
                os.chown(path, *self.repo.owner_ids)
        try:
            # umask 022: the files get the modes git gives them, nothing world-writable.
            with self.repo.locked():
                self.repo.git(*_NO_HOOKS, "worktree", "add", "--quiet", "--detach", str(path), tip, umask=0o022)
        except BaseException:
            if made:
                with contextlib.suppress(OSError):
                    path.rmdir()
            raise

    # -- prune ---------------------------------------------------------------------------

    def delete_refs(self, expected: dict[str, str]) -> str | None:
        if not expected:
            return None
        with self.repo.locked():
            busy = {f"refs/heads/{b}": p for b, p in self.checked_out().items()}
            held = [f"{ref} is checked out at {busy[ref]}" for ref in expected if ref in busy]
            if held:
                return "; ".join(held)
            # One transaction: every ref goes, or none does.
            script = "".join(f"delete {ref} {sha}\n" for ref, sha in expected.items())
            proc = self.repo.git("update-ref", "--stdin", input_bytes=script.encode(), check=False)
            if proc.returncode == 0:
                return None
            moved = []
            for ref, sha in expected.items():
                now = self.repo.ref_value(ref)
                if now != sha:
                    moved.append(f"{ref} moved to {now[:12]}" if now else f"{ref} is gone")
            return "; ".join(moved) or proc.stderr.decode("utf-8", "replace").strip()

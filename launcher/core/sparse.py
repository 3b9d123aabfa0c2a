"""Sparse checkout per run: only the folders a task needs, in git's cone mode.

A run on a 50,000-file repository that touches one service does not need the other 46,000
files on disk. `--sparse DIR` (repeatable) writes git's cone patterns into the run's private
git dir before its checkout; the files outside stay in the index (skip-worktree) and in the
branch, untouched by the agent's commits.
"""

from __future__ import annotations

from launcher.errors import InvalidInputError

_FORBIDDEN = set('*?[]\\!#"') | {"\n", "\r", "\t", "\0"}


def normalise_sparse_dirs(values: list[str]) -> list[str]:
    """Folders relative to the repository's top, without `.`/`..`, globs or duplicates; sorted."""
    folders = []
    for value in values:
        path = value.strip().strip("/")
        parts = path.split("/")
        if not path or any(p in ("", ".", "..") for p in parts) or value.strip().startswith("/"):
            raise InvalidInputError(
                f"--sparse {value!r}: name a folder relative to the repository's top, e.g. services/api"
            )
        if _FORBIDDEN & set(path):
            raise InvalidInputError(f"--sparse {value!r}: folder names only, no patterns or control characters")
        folders.append(path)
    return sorted(set(folders))


def cone_patterns(folders: list[str]) -> str:
    """The `info/sparse-checkout` file git's cone mode writes for these folders.

    Files at the top level are always checked out (cone mode); each named folder is checked out
    whole; its parents only with their own files.
    """
    leaves = [f for f in folders if not any(f.startswith(other + "/") for other in folders if other != f)]
    parents = {"/".join(f.split("/")[:i]) for f in leaves for i in range(1, f.count("/") + 1)} - set(leaves)
    lines = ["/*", "!/*/"]
    for folder in sorted(parents | set(leaves)):
        lines.append(f"/{folder}/")
        if folder in parents:
            lines.append(f"!/{folder}/*/")
    return "\n".join(lines) + "\n"

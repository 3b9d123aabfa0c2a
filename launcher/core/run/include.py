"""[run] include: untracked files of the main checkout (a `.env`, a local config) copied into a run.

Explicit names only, inside the repository only: no absolute path, no `..`, no symlink anywhere on
the way (each step is opened without following one), regular files only, bounded. They are read
at plan time, so a refusal comes before anything is made; the run's entry copies them into the
worktree as the run's uid and lists them in the private git dir's info/exclude, so neither the
agent's `git add -A` nor the harvest's capture of uncommitted work takes them. Their lines are
scrubbed from the run's log like secrets' values.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from launcher.core.ports import RepoPort, WorkspacePort
from launcher.errors import InvalidInputError

# The biggest file, and all of them together, a run takes.
INCLUDE_MAX = 1024 * 1024
INCLUDE_TOTAL_MAX = 4 * 1024 * 1024
# The most files a run takes.
INCLUDE_COUNT_MAX = 64
# Where the run finds them (one file per index, read-only) before its entry copies them in.
CONTAINER_INCLUDE = "/launcher/include"
# Names git's exclude patterns match literally (no glob characters, no spaces to trim).
_PLAIN = re.compile(r"^[A-Za-z0-9._+@=,~-]+(/[A-Za-z0-9._+@=,~-]+)*$")
# Lines shorter than this are not scrubbed from logs: `DEBUG=1` would redact every `1`.
REDACT_MIN = 8


def check_include_name(name: str) -> list[str]:
    """The path's parts, or InvalidInputError saying why launcher will not take it."""
    why: str | None = None
    if not name:
        why = "is empty"
    elif name.startswith("/") or PurePosixPath(name).is_absolute():
        why = "is absolute: name a path inside the repository"
    elif any(part == ".." for part in name.split("/")):
        why = "goes up (`..`): name a path inside the repository"
    elif not _PLAIN.match(name):
        why = "has characters launcher does not take in an include (letters, digits and ._+@=,~- only)"
    parts = [part for part in name.split("/") if part not in {"", "."}]
    if why is None and parts and parts[0] in {".git", ".case"}:
        why = f"is inside {parts[0]}/, which is launcher's and git's"
    if why is None and not parts:
        why = "names the repository itself"
    if why is not None:
        raise InvalidInputError(f"[run] include {name!r} {why}")
    return parts


def read_includes(workspace: WorkspacePort, repo: RepoPort, names: list[str]) -> dict[str, bytes]:
    """Each named file of the main checkout (its relative path -> its bytes), read safely."""
    if len(names) > INCLUDE_COUNT_MAX:
        raise InvalidInputError(f"[run] include names {len(names)} files; a run takes at most {INCLUDE_COUNT_MAX}")
    files: dict[str, bytes] = {}
    total = 0
    for name in names:
        parts = check_include_name(name)
        path = "/".join(parts)
        if path in files:
            continue
        try:
            data = workspace.read_in(repo.toplevel, parts, max_bytes=INCLUDE_MAX)
        except InvalidInputError as exc:
            # A symlink on the way (or at the end), a fifo, a device, more than the cap.
            raise InvalidInputError(
                f"[run] include {name!r}: {exc.message}",
                hint="only regular files inside the repository are copied, never through a symbolic link",
            ) from exc
        if data is None:
            raise InvalidInputError(
                f"[run] include {name!r}: no such file in {repo.toplevel}",
                hint="create it there, or take it out of [run] include",
            )
        total += len(data)
        if total > INCLUDE_TOTAL_MAX:
            raise InvalidInputError(f"[run] include: more than {INCLUDE_TOTAL_MAX} bytes in all")
        files[path] = data
    return files


def redaction_values(files: dict[str, bytes]) -> tuple[str, ...]:
    """The lines of the included files that the run's log never shows (as for secrets' values)."""
    values: set[str] = set()
    for data in files.values():
        for line in data.decode("utf-8", "replace").splitlines():
            line = line.strip()
            if len(line.encode()) >= REDACT_MIN:
                values.add(line)
                # KEY=VALUE: the value alone, as the agent may print it.
                _key, sep, value = line.partition("=")
                value = value.strip().strip("'\"")
                if sep and len(value.encode()) >= REDACT_MIN:
                    values.add(value)
    return tuple(sorted(values))

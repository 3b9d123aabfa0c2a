"""Slugs and IDs: the only strings from users that end up in file names and git refs."""

from __future__ import annotations

import re
import unicodedata

from launcher.errors import InvalidInputError

SLUG_MAX = 48
PREFIX_MAX = 40
_NOT_SLUG = re.compile(r"[^a-z0-9]+")
# \Z, not $: Python's $ also matches before a final newline, which must never reach a file name.
SLUG_RE = re.compile(rf"^[a-z0-9](?:[a-z0-9-]{{0,{SLUG_MAX - 2}}}[a-z0-9])?\Z")
PREFIX_RE = re.compile(rf"^[a-z0-9](?:[a-z0-9-]{{0,{PREFIX_MAX - 2}}}[a-z0-9])?\Z")
# case's IDs: <prefix>-<N>-<slug>, where the prefix may itself contain dashes.
TASK_ID_RE = re.compile(r"^(?P<prefix>[a-z0-9][a-z0-9-]*?)-(?P<number>[1-9][0-9]*)(?:-(?P<slug>[a-z0-9-]+))?\Z")


def slugify(text: str, *, max_length: int = SLUG_MAX) -> str:
    """Turn free text into a slug that is safe as a file name and a git ref component.

    Non-ASCII letters are folded to ASCII where Unicode knows how; everything else that is
    not ``[a-z0-9]`` collapses into single dashes. The result is never empty, never starts
    or ends with a dash, and never exceeds ``max_length``.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NOT_SLUG.sub("-", folded.lower()).strip("-")
    slug = slug[:max_length].rstrip("-")
    if not slug:
        raise InvalidInputError(
            f"cannot make a slug from {text[:60]!r}: it has no letters or digits",
            hint="pass --slug with letters, digits and dashes",
        )
    return slug


def validate_slug(slug: str) -> str:
    """Accept a user-given slug only if it is already in canonical form."""
    if not SLUG_RE.match(slug):
        raise InvalidInputError(
            f"invalid slug {slug[:80]!r}: use 1-{SLUG_MAX} lowercase letters, digits and inner dashes",
            hint="a slug names files and git branches: '/', '..', spaces and control characters are refused",
        )
    return slug


def validate_prefix(prefix: str) -> str:
    if not PREFIX_RE.match(prefix):
        raise InvalidInputError(
            f"invalid repository name {prefix[:80]!r} for a task ID prefix: use lowercase letters, "
            f"digits and inner dashes, at most {PREFIX_MAX} characters"
        )
    return prefix


def repo_prefix(name: str) -> str:
    """The task-ID prefix for a repository's directory name."""
    return slugify(name, max_length=PREFIX_MAX)


def make_task_id(prefix: str, number: int, slug: str) -> str:
    return f"{prefix}-{number}-{slug}"


def validate_task_id(task_id: str) -> str:
    if len(task_id) > PREFIX_MAX + SLUG_MAX + 12 or not TASK_ID_RE.match(task_id):
        raise InvalidInputError(f"invalid task ID {task_id[:100]!r}: expected <repo>-<N>-<slug>")
    return task_id

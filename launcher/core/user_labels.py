"""A user's own labels on a run (`run --label team=payments`): recorded with the run, selected by
`ps --filter label=KEY[=VALUE]`, as docker's `--label` and `--filter label=` are.

They live in the run's record only, never on the engine's objects: launcher's own namespace of
Docker labels (launcher.core.labels) stays a promise that nobody else writes into.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

# Docker's own rule of thumb for keys (reverse-DNS, letters, digits, . _ - /), bounded so that a
# record stays small and a label prints on one line.
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,127}")
MAX_VALUE = 256
MAX_LABELS = 32


class LabelError(ValueError):
    """A `--label` that is not KEY=VALUE with a key and value launcher keeps."""


def parse_labels(given: Iterable[str]) -> dict[str, str]:
    """KEY=VALUE (or KEY alone: an empty value), repeatable; a key given twice keeps its last value."""
    labels: dict[str, str] = {}
    for item in given:
        key, _, value = item.partition("=")
        labels[key] = value
    return check_labels(labels)


def check_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """The labels, or LabelError naming the first one launcher does not keep."""
    for key, value in labels.items():
        if not _KEY.fullmatch(key):
            raise LabelError(
                f"label key {key!r}: letters, digits and . _ - / (starting with a letter or digit), at most 128"
            )
        if len(value) > MAX_VALUE or any(ch in value for ch in "\r\n\0"):
            raise LabelError(f"label {key}: its value is one line of at most {MAX_VALUE} characters")
    if len(labels) > MAX_LABELS:
        raise LabelError(f"{len(labels)} labels: a run keeps at most {MAX_LABELS}")
    return dict(labels)


def label_matches(labels: Mapping[str, str] | None, wanted: str) -> bool:
    """`KEY` (the run has that label) or `KEY=VALUE` (with that value), as docker's filter."""
    key, sep, value = wanted.partition("=")
    have = labels or {}
    if key not in have:
        return False
    return not sep or have[key] == value


def labels_text(labels: Mapping[str, str] | None) -> str:
    return ",".join(f"{key}={value}" if value else key for key, value in sorted((labels or {}).items()))

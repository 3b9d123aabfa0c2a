"""Secrets: read by name on the host, handed to the run, scrubbed from its log.

The log is redacted as a stream: every byte inside an occurrence of a secret value (anywhere,
across lines and across the chunks the output arrives in) is replaced, and the output goes on
at once, held back only by the longest value less one byte. The work per byte does not depend
on how long a line is, so an agent's `\\r` progress bar or a megabyte without a newline cannot
stall the log.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from launcher.errors import InvalidInputError

# Shorter values are refused, not redacted: they match ordinary output (a 4-character value
# would blank out every word that contains it) and a value that is not redacted leaks.
MIN_SECRET_LENGTH = 8
MARK = b"***"
# A shell's variable name: the run's entry exports each secret by name.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Names launcher itself gives the agent; a secret must not replace one of them.
RESERVED_PREFIXES = ("LAUNCHER_", "CASE_", "GIT_CONFIG_")
RESERVED_NAMES = frozenset({"HOME", "PATH"})


def resolve_secrets(names: list[str], host_environ: Mapping[str, str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in names:
        name, sep, source = item.partition("=")
        if not _NAME.fullmatch(name):
            raise InvalidInputError(
                f"--secret {item!r}: a secret needs a variable name (NAME or NAME=FILE)",
                hint="letters, digits and _, not starting with a digit",
            )
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            raise InvalidInputError(f"--secret {name}: launcher sets this variable itself; choose another name")
        if sep:
            try:
                value = Path(source).read_text(encoding="utf-8").rstrip("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"--secret {name}: cannot read {source}: {exc}") from exc
        elif name in host_environ:
            value = host_environ[name]
        else:
            raise InvalidInputError(f"--secret {name}: no such variable in launcher's environment")
        check_secret_value(f"--secret {name}", value)
        if "\0" in value:
            raise InvalidInputError(f"--secret {name}: the value holds a NUL byte, which no environment variable can")
        secrets[name] = value
    return secrets


def check_secret_value(what: str, value: str) -> None:
    """Refuse a value too short to be redacted safely (before anything of the run is created)."""
    if len(value.encode()) < MIN_SECRET_LENGTH:
        raise InvalidInputError(
            f"{what}: the value is {len(value.encode())} bytes; launcher redacts secrets of at least "
            f"{MIN_SECRET_LENGTH} bytes from the run's log and refuses shorter ones",
            hint="a value that short matches ordinary output; pass it as a plain setting, not a secret",
        )


def secret_patterns(values: Iterable[str]) -> list[bytes]:
    """What the log must never show: each value, and each long-enough line of a multi-line one
    (an agent that prints one line of a PEM file, or prints it with CRLF line ends)."""
    found: set[bytes] = set()
    for value in values:
        data = value.encode()
        if len(data) >= MIN_SECRET_LENGTH:
            found.add(data)
        for line in data.splitlines():
            line = line.strip(b"\r")
            if len(line) >= MIN_SECRET_LENGTH:
                found.add(line)
    return sorted(found, key=len, reverse=True)


class Redactor:
    """Replaces every run of bytes covered by occurrences of secret values with ``***``.

    The result does not depend on how the output is chunked: fed in any pieces, it equals the
    whole output redacted at once. Between chunks it holds back only the bytes at the end that
    could be the start of a value (at most the longest value less one byte), so a line waiting
    for more output is shown at once unless it ends like a secret begins; it keeps as many
    already-emitted bytes before them as that, so an occurrence that began in them is still
    found. Each value is searched with ``bytes.find`` (linear in the data, whatever it holds).
    """

    def __init__(self, secrets: Mapping[str, str] | Iterable[str]) -> None:
        values = secrets.values() if isinstance(secrets, Mapping) else secrets
        self._patterns = secret_patterns(values)
        self._hold = max((len(p) for p in self._patterns), default=1) - 1
        self._window = b""  # already-emitted bytes (up to _hold of them), then the held-back ones
        self._emitted = 0  # how many leading bytes of _window were already emitted
        self._in_mark = False  # the last byte emitted was inside a secret (its *** is out)

    def feed(self, chunk: bytes) -> bytes:
        if not self._patterns:
            return chunk
        data = self._window + chunk
        cut = max(self._emitted, len(data) - self._open_start(data))
        out = self._emit(data, cut)
        start = max(0, cut - self._hold)
        self._window, self._emitted = data[start:], cut - start
        return out

    def flush(self) -> bytes:
        """Everything still held back (the output ended)."""
        if not self._patterns:
            return b""
        out = self._emit(self._window, len(self._window))
        self._window, self._emitted, self._in_mark = b"", 0, False
        return out

    def _emit(self, data: bytes, cut: int) -> bytes:
        """``data[emitted:cut]`` with every covered run replaced by one mark."""
        pos = self._emitted
        if cut <= pos:
            return b""
        pieces: list[bytes] = []
        for start, end in self._covered(data, cut):
            start, end = max(start, pos), min(end, cut)
            if end <= start:
                continue
            if start > pos:
                pieces.append(data[pos:start])
                self._in_mark = False
            if not self._in_mark:
                pieces.append(MARK)
            self._in_mark, pos = True, end
        if pos < cut:
            pieces.append(data[pos:cut])
            self._in_mark = False
        return b"".join(pieces)

    def _open_start(self, data: bytes) -> int:
        """How many bytes at the end of ``data`` are the start of a value (a proper prefix of one)."""
        tail = data[max(0, len(data) - self._hold) :]
        longest = 0
        for pattern in self._patterns:
            # The leftmost place the value could start gives the longest open start.
            at = tail.find(pattern[:1], max(0, len(tail) - len(pattern) + 1))
            while 0 <= at < len(tail) - longest:
                if pattern.startswith(tail[at:]):
                    longest = len(tail) - at
                    break
                at = tail.find(pattern[:1], at + 1)
        return longest

    def _covered(self, data: bytes, cut: int) -> list[tuple[int, int]]:
        """The merged spans of every occurrence (overlapping ones too) that starts before ``cut``."""
        spans: list[tuple[int, int]] = []
        for pattern in self._patterns:
            at = data.find(pattern)
            while 0 <= at < cut:
                spans.append((at, at + len(pattern)))
                at = data.find(pattern, at + 1)
        if not spans:
            return spans
        spans.sort()
        merged = [spans[0]]
        for start, end in spans[1:]:
            last_start, last_end = merged[-1]
            if start <= last_end:
                merged[-1] = (last_start, max(last_end, end))
            else:
                merged.append((start, end))
        return merged

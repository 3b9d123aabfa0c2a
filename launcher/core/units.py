"""Durations and sizes as people type them: `90s`, `12h`, `7d`; `512k`, `10g`."""

from __future__ import annotations

import re

from launcher.errors import InvalidInputError

_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[smhdw]?)")
_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE = re.compile(r"(?P<n>\d+(?:\.\d+)?)(?P<unit>[kmgt]?)(?:i?b)?", re.IGNORECASE)
_BYTES = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_duration(text: str, *, what: str) -> float:
    """Seconds in ``text`` (a number with s, m, h, d or w; no unit: seconds)."""
    found = _DURATION.fullmatch(text.strip())
    if found is None:
        raise InvalidInputError(f"{what} {text!r}: expected a duration such as 90s, 30m, 12h, 7d or 2w")
    return float(found["n"]) * _SECONDS[found["unit"]]


def parse_size(text: str, *, what: str) -> int:
    """Bytes in ``text`` (a number with k, m, g or t, powers of 1024; no unit: bytes)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise InvalidInputError(f"{what} {text!r}: expected a size such as 500m, 10g or 1t")
    return int(float(found["n"]) * _BYTES[found["unit"].lower()])


def parse_since(text: str, now: float, *, what: str = "--since") -> float:
    """A moment as unix time: a duration ago (``10m``, ``2h``) or an ISO 8601 time (UTC unless it
    says otherwise)."""
    from datetime import UTC, datetime

    try:
        return now - parse_duration(text, what=what)
    except InvalidInputError:
        pass
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(
            f"{what} {text!r}: expected a duration ago (90s, 30m, 12h, 7d) or an ISO 8601 time (2026-12-02T17:50:00Z)"
        ) from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()

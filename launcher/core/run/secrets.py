"""Secrets: read by name on the host, handed to the run, scrubbed from its log."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from launcher.errors import InvalidInputError


def resolve_secrets(names: list[str], host_environ: Mapping[str, str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in names:
        name, sep, source = item.partition("=")
        if not name.isidentifier():
            raise InvalidInputError(f"--secret {item!r}: a secret needs a variable name (NAME or NAME=FILE)")
        if sep:
            try:
                secrets[name] = Path(source).read_text(encoding="utf-8").rstrip("\n")
            except (OSError, UnicodeDecodeError) as exc:
                raise InvalidInputError(f"--secret {name}: cannot read {source}: {exc}") from exc
        elif name in host_environ:
            secrets[name] = host_environ[name]
        else:
            raise InvalidInputError(f"--secret {name}: no such variable in launcher's environment")
    return secrets


class Redactor:
    """Replaces secret values in log output; works line by line so a split value is still caught."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._values = sorted((v.encode() for v in secrets.values() if len(v) >= 4), key=len, reverse=True)
        self._pending = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._values:
            return chunk
        data = self._pending + chunk
        cut = data.rfind(b"\n") + 1
        self._pending = data[cut:]
        return self._scrub(data[:cut])

    def flush(self) -> bytes:
        data, self._pending = self._pending, b""
        return self._scrub(data)

    def _scrub(self, data: bytes) -> bytes:
        for value in self._values:
            data = data.replace(value, b"***")
        return data

"""Host-side clones of repositories named by remote URL, and the remotes of local repositories.

The core decides which repository a task means (launcher/core/repos.py); this port only
clones, fetches and reads remote URLs, with the host's own git and credentials.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class ClonesPort(Protocol):
    def remote_url(self, toplevel: Path) -> str | None:
        """The raw URL of the repository's ``origin``, else of its first remote; None without remotes."""
        ...

    def holds(self, path: Path) -> bool:
        """Whether ``path`` is one of this cache's clones (or inside one)."""
        ...

    def sync(self, url: str, key: str) -> Path:
        """A local clone of ``url`` (cloned on first use), fetched now; its top-level folder.

        ``key`` is the normalised URL: every spelling of one URL shares one clone. Clone and
        fetch hold the clone's lock, so concurrent callers never race for it."""
        ...

"""Forges' REST APIs for pull requests: one module per forge, imported only when chosen."""

from __future__ import annotations

from launcher.core.ports.forge import ForgePort
from launcher.errors import InvalidInputError

FORGES = ("github",)


def open_forge(kind: str, api_url: str, remote_url: str, token: str) -> ForgePort:
    """The pull requests of the repository ``remote_url`` names, on forge ``kind`` at ``api_url``."""
    if kind == "github":
        from launcher.adapters.forge.github import GitHubForge

        return GitHubForge.for_remote(api_url, remote_url, token)
    raise InvalidInputError(f"unknown forge {kind!r}", hint=f"[publish] forge is one of: {', '.join(FORGES)}")

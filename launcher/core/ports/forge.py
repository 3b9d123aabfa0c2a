"""A forge's pull requests, as publishing uses them (see adapters.forge; GitHub first).

Only the host talks to a forge, with the host's token; an implementation holds the token and
never shows it (not in its repr, its errors or its logs). Every failure a user must act on is a
``PublishError``; transient ones are retried inside the implementation, bounded.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field


class ForgePullRequest(BaseModel):
    """A pull request as the forge answered about it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    number: int
    url: str = Field(description="the pull request's page for a person (GitHub's html_url)")
    draft: bool
    head: str = Field(description="the branch it proposes (a branch name, no owner)")
    base: str = Field(description="the branch it proposes to merge into")
    state: str = Field(description="open, closed (GitHub reports merged ones as closed)")


class ForgePort(Protocol):
    """One repository on a forge: its open pull requests, found by head branch."""

    def find_open_pull_request(self, head_branch: str) -> ForgePullRequest | None:
        """The open pull request from ``head_branch`` of this repository, if there is one."""
        ...

    def open_pull_request(self, *, head: str, base: str, title: str, body: str, draft: bool) -> ForgePullRequest: ...

    def update_pull_request(self, number: int, *, title: str, body: str) -> ForgePullRequest: ...

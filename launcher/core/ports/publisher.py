"""Where a run's work goes after harvest: a remote the host pushes to, with the host's credentials.

The run never takes part: the adapter runs host git on the repository's own git dir, and any
token it is given goes to git through a host-only askpass helper, never argv, files or logs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from launcher.core.ports.repo import RepoPort

if TYPE_CHECKING:
    from launcher.core.ports.forge import ForgePort

RefStatus = Literal["new", "updated", "up-to-date", "rejected", "lease", "remote-rejected", "error"]


class RefUpdate(BaseModel):
    """One remote ref to set, compare-and-set: only if it is at ``expect`` ("" = must not exist)."""

    model_config = ConfigDict(frozen=True)

    remote_ref: str = Field(description="the full ref name on the remote")
    sha: str = Field(description="the commit (or object) it is to point at")
    expect: str = Field(default="", description="what it must point at now; empty: it must not exist")


class RefResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    remote_ref: str
    status: RefStatus
    reason: str = ""


class PushAttempt(BaseModel):
    """What one `git push` said: each ref's fate, or why it did not get that far."""

    model_config = ConfigDict(frozen=True)

    refs: list[RefResult] = Field(default_factory=list)
    error: str | None = Field(default=None, description="git's complaint, credentials scrubbed")
    transient: bool = Field(default=False, description="worth trying again: the connection, a 5xx, a timeout")

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.status in {"new", "updated", "up-to-date"} for r in self.refs)


class Credential(BaseModel):
    """How the host authenticates: a token (from [publish] token_env) or git's own helpers."""

    model_config = ConfigDict(frozen=True)

    token: SecretStr | None = Field(default=None, description="None: git's credential helper or GIT_ASKPASS")
    user: str = Field(default="x-access-token", description="the user name the token goes with over HTTPS")


class PublisherPort(Protocol):
    def resolve_remote(self, repo: RepoPort, remote: str) -> str:
        """The URL ``remote`` (a remote of ``repo`` or a URL) pushes to; raises PublishError if none."""
        ...

    def push(self, repo: RepoPort, remote: str, updates: list[RefUpdate], credential: Credential) -> PushAttempt:
        """One atomic push of ``updates`` (all or none), each under its lease. Never raises for
        what the remote answered: that is in the attempt."""
        ...

    def default_branch(self, repo: RepoPort, remote: str, credential: Credential) -> str | None:
        """The branch the remote's HEAD names, or None."""
        ...

    def diffstat(self, repo: RepoPort, base: str, tip: str) -> str:
        """``git diff --stat base..tip`` by host git."""
        ...

    def open_forge(self, kind: str, api_url: str, remote_url: str, token: str) -> ForgePort:
        """The forge's REST API for pull requests (imported only when asked for)."""
        ...

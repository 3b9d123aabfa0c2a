"""GitHub's (and GitHub Enterprise's) REST API for a repository's pull requests, from the host.

Three endpoints, over the standard library's urllib (three JSON calls do not need a client
library): list open pulls by head, create one, update one. Transient failures (the connection,
5xx, rate limits that say when to come back, soon enough) are retried with tenacity, bounded;
everything else is a PublishError that says what to fix. The token goes only into the
Authorization header of requests to ``api_url``'s own origin: redirects elsewhere are refused,
and it is never part of a repr, a message or an exception.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, NoReturn

from pydantic import BaseModel, ConfigDict, SecretStr, ValidationError
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt, wait_random_exponential

from launcher.core.ports.forge import ForgePullRequest
from launcher.errors import InvalidInputError, PublishError

API_VERSION = "2022-11-28"
GITHUB_API = "api.github.com"
GITHUB_GIT_HOSTS = frozenset({"github.com", "www.github.com", "ssh.github.com"})
ATTEMPTS = 5
BACKOFF_S = 0.5
# The longest a rate limit may ask us to wait before a retry; a longer one is reported instead.
MAX_WAIT_S = 60.0
# GitHub's advice for a secondary rate limit that names no time: wait at least a minute.
SECONDARY_RATE_WAIT_S = 60.0
TIMEOUT_S = 30.0
RESPONSE_MAX = 8 * 1024 * 1024
MESSAGE_MAX = 500

_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
# git's scp-like syntax: [user@]host:path, recognised (as git does) by a colon before any slash.
_SCP = re.compile(r"^(?:(?P<user>[^@/]+)@)?(?P<host>[^:/]+):(?P<path>.+)$")
_URL_SCHEMES = frozenset({"https", "http", "ssh", "git", "git+ssh", "ssh+git"})
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class _Transient(Exception):
    """One attempt failed in a way worth repeating; ``retry_after`` is what the forge asked for."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Ref(BaseModel):
    model_config = ConfigDict(extra="ignore")

    ref: str
    label: str | None = None


class _Pull(BaseModel):
    """The fields of GitHub's pull request object that launcher reads."""

    model_config = ConfigDict(extra="ignore")

    number: int
    html_url: str
    draft: bool = False  # older GitHub Enterprise servers leave it out
    state: str
    head: _Ref
    base: _Ref

    def plain(self) -> ForgePullRequest:
        return ForgePullRequest(
            number=self.number,
            url=self.html_url,
            draft=self.draft,
            head=self.head.ref,
            base=self.base.ref,
            state=self.state,
        )


class _SameOrigin(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only within the API's origin: the Authorization header goes with it."""

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: Any,
        code: int,
        msg: str,
        headers: Any,
        newurl: str,
    ) -> urllib.request.Request | None:
        if _origin(newurl) != _origin(req.full_url):
            raise PublishError(
                f"the forge's API redirected to another host ({_origin(newurl)}); the token was not sent there",
                hint="set [publish] api_url to the API's own address",
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class GitHubForge:
    """The pull requests of one GitHub repository, through its REST API."""

    name = "github"

    def __init__(
        self,
        api_url: str,
        owner: str,
        repo: str,
        token: str,
        *,
        attempts: int = ATTEMPTS,
        backoff: float = BACKOFF_S,
        max_wait: float = MAX_WAIT_S,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.api_url = _check_api_url(api_url)
        if not _OWNER.match(owner) or not _REPO.match(repo) or repo in {".", ".."}:
            raise InvalidInputError(f"{owner!r}/{repo!r} is not a GitHub repository name")
        token = token.strip()  # a token read from a file often ends in a newline
        if not token or _CONTROL.search(token) or any(ch.isspace() for ch in token):
            # Said without the token: its shape is all the user needs to hear about.
            raise InvalidInputError(
                "the forge token is empty or holds whitespace or control characters",
                hint="the variable [publish] token_env names must hold the token alone",
            )
        self.owner = owner
        self.repo = repo
        self._token = SecretStr(token)
        self._attempts = max(1, attempts)
        self._backoff = backoff
        self._max_wait = max_wait
        self._timeout = timeout
        self._opener = urllib.request.build_opener(_SameOrigin())

    @classmethod
    def for_remote(cls, api_url: str, remote_url: str, token: str, **options: Any) -> GitHubForge:
        """The repository a git remote URL names (https://, ssh://, git@host:owner/name.git)."""
        host, owner, repo = parse_remote(remote_url)
        api_host = urllib.parse.urlsplit(api_url.strip()).hostname or ""
        if api_host == GITHUB_API and host not in GITHUB_GIT_HOSTS:
            raise InvalidInputError(
                f"the remote {redact_url(remote_url)} is on {host}, but [publish] api_url is github.com's API",
                hint=f'for GitHub Enterprise set [publish] api_url = "https://{host}/api/v3"',
            )
        return cls(api_url, owner, repo, token, **options)

    def __repr__(self) -> str:
        return f"GitHubForge(api_url={self.api_url!r}, repo='{self.owner}/{self.repo}')"

    # -- the three endpoints -------------------------------------------------------------

    def find_open_pull_request(self, head_branch: str) -> ForgePullRequest | None:
        query = {"head": f"{self.owner}:{head_branch}", "state": "open", "per_page": "100"}
        answer = self._call("GET", self._pulls_path(), query=query, expect=200)
        if not isinstance(answer, list):
            raise self._unexpected("a list of pull requests")
        label = f"{self.owner}:{head_branch}".lower()
        found: list[ForgePullRequest] = []
        for item in answer:
            pull = self._pull(item)
            # Checked again here: a server that ignored the head filter must not get another
            # branch's pull request rewritten.
            if pull.state == "open" and pull.head.ref == head_branch and (pull.head.label or label).lower() == label:
                found.append(pull.plain())
        return min(found, key=lambda pr: pr.number) if found else None

    def open_pull_request(self, *, head: str, base: str, title: str, body: str, draft: bool) -> ForgePullRequest:
        payload = {"title": title, "head": head, "base": base, "body": body, "draft": draft}
        return self._pull(self._call("POST", self._pulls_path(), payload=payload, expect=201)).plain()

    def update_pull_request(self, number: int, *, title: str, body: str) -> ForgePullRequest:
        if number <= 0:
            raise InvalidInputError(f"{number} is not a pull request number")
        path = f"{self._pulls_path()}/{number}"
        return self._pull(self._call("PATCH", path, payload={"title": title, "body": body}, expect=200)).plain()

    # -- requests ------------------------------------------------------------------------

    def _pulls_path(self) -> str:
        return f"/repos/{urllib.parse.quote(self.owner)}/{urllib.parse.quote(self.repo)}/pulls"

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        payload: dict[str, Any] | None = None,
        expect: int,
    ) -> Any:
        retrying = Retrying(
            retry=retry_if_exception_type(_Transient),
            stop=stop_after_attempt(self._attempts),
            wait=self._wait,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._once(method, path, query, payload, expect)
        except _Transient as exc:
            raise PublishError(
                f"{self._what(method)}: {self._scrub(exc.message)} ({self._attempts} attempts)",
                hint="the forge or the network is failing; try again later (`launcher push RUN` publishes again)",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Transient) and exc.retry_after is not None:
            return min(exc.retry_after, self._max_wait)
        return float(wait_random_exponential(multiplier=self._backoff, max=self._max_wait)(state))

    def _once(
        self,
        method: str,
        path: str,
        query: dict[str, str] | None,
        payload: dict[str, Any] | None,
        expect: int,
    ) -> Any:
        url = self.api_url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        data = json.dumps(payload).encode("utf-8") if payload is not None else None
        request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (the scheme is checked)
        request.add_header("Accept", "application/vnd.github+json")
        request.add_header("X-GitHub-Api-Version", API_VERSION)
        request.add_header("User-Agent", "launcher")
        request.add_header("Authorization", f"Bearer {self._token.get_secret_value()}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        refused: tuple[int, Any] | None = None
        try:
            with self._opener.open(request, timeout=self._timeout) as response:
                status = response.status
                raw = response.read(RESPONSE_MAX + 1)
        except urllib.error.HTTPError as exc:
            with exc:
                refused, raw = (exc.code, exc.headers), exc.read(RESPONSE_MAX + 1)
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise PublishError(
                    f"{self._what(method)}: the forge's TLS certificate was refused ({exc.reason.verify_message})",
                    hint="for a GitHub Enterprise with its own CA, set SSL_CERT_FILE to the CA bundle",
                ) from None
            raise _Transient(f"cannot reach {self.api_url}: {exc.reason}") from None
        except (http.client.HTTPException, OSError) as exc:  # timeouts and resets are OSErrors
            raise _Transient(f"cannot reach {self.api_url}: {type(exc).__name__}: {exc}") from None
        if refused is not None:
            # Raised here, not in the handler: the error carries no chained HTTPError (or its request).
            self._refuse(method, refused[0], refused[1], raw)
        if len(raw) > RESPONSE_MAX:
            raise PublishError(f"{self._what(method)}: the forge's answer is over {RESPONSE_MAX} bytes")
        if status != expect:
            raise self._unexpected(f"HTTP {expect}, got HTTP {status}")
        try:
            return json.loads(raw)
        except ValueError:
            raise self._unexpected("JSON") from None

    def _refuse(self, method: str, status: int, headers: Any, raw: bytes) -> NoReturn:
        """Raise what an HTTP error status means: _Transient to retry, PublishError to report."""
        message = self._scrub(_github_message(raw))
        where = f"{self.owner}/{self.repo}"
        what = self._what(method)
        rate_limited = status == 429 or (
            status == 403 and (headers.get("x-ratelimit-remaining") == "0" or "rate limit" in message.lower())
        )
        if rate_limited:
            wait = _retry_after(headers)
            if wait is None:
                wait = SECONDARY_RATE_WAIT_S
            if wait > self._max_wait:
                raise PublishError(
                    f"{what}: GitHub's rate limit for this token is used up for {wait:.0f}s more ({message})",
                    hint="publish again later (`launcher push RUN`), or use another token",
                )
            raise _Transient(f"rate limited: {message}", retry_after=wait)
        if status >= 500:
            raise _Transient(f"HTTP {status}: {message}")
        hints = {
            401: (
                "the forge refused the token (401: it is invalid, expired or revoked)",
                "put a valid token in the host variable [publish] token_env names",
            ),
            403: (
                f"the token may not do this on {where} (403: {message})",
                "a fine-grained token needs 'Pull requests: read and write' on the repository; "
                "a classic one the 'repo' scope; an organisation may also have to approve it (SSO)",
            ),
            404: (
                f"{where} was not found at {self.api_url} (404): the repository name is wrong, "
                "or the token cannot see it",
                "check the remote's owner/name and the token's access to it; for GitHub Enterprise "
                'set [publish] api_url = "https://HOST/api/v3"',
            ),
            422: (f"GitHub refused the pull request on {where} (422: {message})", _hint_422(message)),
        }
        if status in hints:
            text, hint = hints[status]
            raise PublishError(f"{what}: {text}", hint=hint)
        if 300 <= status < 400:
            raise PublishError(
                f"{what}: {where} answered HTTP {status} (moved)", hint="update the remote URL to where it is now"
            )
        raise PublishError(f"{what}: the forge answered HTTP {status} ({message})")

    def _pull(self, item: Any) -> _Pull:
        try:
            return _Pull.model_validate(item)
        except ValidationError:
            raise self._unexpected("a pull request object") from None

    def _unexpected(self, wanted: str) -> PublishError:
        return PublishError(
            f"the forge at {self.api_url} did not answer as GitHub's REST API does (expected {wanted})",
            hint="check [publish] api_url (GitHub Enterprise: https://HOST/api/v3)",
        )

    def _what(self, method: str) -> str:
        verbs = {"GET": "looking up", "POST": "opening", "PATCH": "updating"}
        return f"{verbs.get(method, method)} the pull request on {self.owner}/{self.repo}"

    def _scrub(self, text: str) -> str:
        """What the forge or the network said, without the token if anything echoed it."""
        secret = self._token.get_secret_value()
        return text.replace(secret, "***") if secret else text


def parse_remote(remote_url: str) -> tuple[str, str, str]:
    """(host, owner, name) of a GitHub repository's git URL; InvalidInputError for anything else."""
    text = remote_url.strip()
    shown = redact_url(text)
    host: str | None
    if "://" in text:
        parts = urllib.parse.urlsplit(text)
        if parts.scheme.lower() not in _URL_SCHEMES:
            raise _unmappable(shown, f"its scheme {parts.scheme!r} is not https, http or ssh")
        try:
            host = parts.hostname
        except ValueError:
            host = None
        path = parts.path
        if parts.query or parts.fragment:
            raise _unmappable(shown, "it has a query or fragment")
    else:
        scp = _SCP.match(text)
        if scp is None or "/" in scp.group("host"):
            raise _unmappable(shown, "it is a local path, not a forge's URL")
        host, path = scp.group("host"), scp.group("path")
    if not host:
        raise _unmappable(shown, "it names no host")
    segments = [s for s in path.strip("/").split("/") if s]
    if segments and segments[-1].endswith(".git"):
        segments[-1] = segments[-1][: -len(".git")]
    if len(segments) != 2:
        raise _unmappable(shown, "its path is not OWNER/NAME")
    owner, repo = segments
    if not _OWNER.match(owner) or not _REPO.match(repo) or repo in {".", ".."}:
        raise _unmappable(shown, f"{owner}/{repo} is not a valid OWNER/NAME")
    return host.lower(), owner, repo


def redact_url(url: str) -> str:
    """A URL without its user-info (a token in ``https://user:TOKEN@host/``)."""
    if "://" in url:
        scheme, _, rest = url.partition("://")
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            authority = "***@" + authority.rpartition("@")[2]
        return f"{scheme}://{authority}{slash}{path}"
    scp = _SCP.match(url)
    if scp and scp.group("user") is not None and "/" not in scp.group("host"):
        return f"***@{scp.group('host')}:{scp.group('path')}"
    return url


def _unmappable(shown: str, why: str) -> InvalidInputError:
    return InvalidInputError(
        f"cannot tell which GitHub repository the remote {shown} is: {why}",
        hint="pull requests need a remote like https://github.com/OWNER/NAME.git or git@github.com:OWNER/NAME.git",
    )


def _check_api_url(api_url: str) -> str:
    text = api_url.strip().rstrip("/")
    parts = urllib.parse.urlsplit(text)
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if parts.scheme not in {"https", "http"} or not host:
        raise InvalidInputError(f"[publish] api_url {redact_url(text)!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise InvalidInputError(
            "[publish] api_url holds credentials", hint="the token comes from the variable [publish] token_env names"
        )
    if parts.query or parts.fragment:
        raise InvalidInputError(f"[publish] api_url {text!r} has a query or fragment")
    if parts.scheme == "http" and not _is_loopback(host):
        # The token would cross the network in clear text.
        raise InvalidInputError(f"[publish] api_url {text!r} is plain http", hint="use https://")
    return text


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait, from Retry-After, else from the primary rate limit's reset time."""
    value = headers.get("retry-after")
    if value is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
    reset = headers.get("x-ratelimit-reset")
    if reset is not None and headers.get("x-ratelimit-remaining") == "0":
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return None


def _github_message(raw: bytes) -> str:
    """GitHub's error text: its ``message`` and each of its ``errors``, capped, one line."""
    try:
        doc = json.loads(raw)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        text = raw[:MESSAGE_MAX].decode("utf-8", "replace")
        return _CONTROL.sub(" ", text).strip() or "no message"
    parts = [str(doc.get("message") or "")]
    errors = doc.get("errors")
    for error in errors if isinstance(errors, list) else []:
        if isinstance(error, dict):
            parts.append(str(error.get("message") or " ".join(str(error.get(k, "")) for k in ("field", "code"))))
        else:
            parts.append(str(error))
    text = _CONTROL.sub(" ", ": ".join(p.strip() for p in parts if p and p.strip()))
    return (text[:MESSAGE_MAX] + "…" if len(text) > MESSAGE_MAX else text) or "no message"


def _hint_422(message: str) -> str:
    lowered = message.lower()
    if "draft" in lowered:
        return "this repository does not take draft pull requests: set [publish] draft = false"
    if "already exists" in lowered:
        return "an open pull request from this branch exists; publishing again updates it"
    if "no commits between" in lowered:
        return "the branch has no commits beyond its base: there is nothing to propose"
    if "head" in lowered or "base" in lowered:
        return "the branch (head) must be pushed to the repository and the base branch must exist there"
    return "see the forge's message above"

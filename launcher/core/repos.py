"""Which repository a task or a `--repo` value means on this machine: the one place that decides.

A task names its repository portably: its name (a projects.json entry, the task-ID prefix)
and the remote URL of the repository it was made in, credentials stripped. The creator's
absolute path is kept only as a hint. On any machine a run finds the repository, first hit wins:

1. ``run TASK --repo PATH|NAME``;
2. this root's projects.json entry of that name;
3. launcher.toml's ``[repos]`` entry of that name (a local path, or a URL to clone);
4. the creator's path, if it exists here and is the same repository (its remote URL is the
   task's; for a task without one, its base resolves there);
5. the clone cache under the root (``.launcher/clones``), cloned from the task's URL on first
   use and fetched before every run.

The creator's checkout comes before the clone cache on purpose: on the creator's own machine
a run starts from their repository as it is (unpushed commits included) and its branch lands
there, not in a clone they never asked for.
"""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol
from urllib.parse import SplitResult, urlsplit, urlunsplit

from launcher.core.ports import RepoPort
from launcher.core.ports.clones import ClonesPort
from launcher.core.slugs import repo_prefix
from launcher.core.tasks import RepoRef
from launcher.errors import InvalidInputError, LauncherError, NotFoundError
from launcher.models import TaskRecord

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# scp-like `[user[:secret]@]host:path` (host may be a bracketed IPv6 address).
_SCP = re.compile(r"^(?:(?P<user>[^/]*)@)?(?P<host>\[[^\]/]+\]|[^@/:\[]+):(?P<path>.*)$", re.DOTALL)
# Schemes whose userinfo is a credential (a token as user name is common): dropped whole.
# Elsewhere (ssh) the user name says which account to log in as, and only a password goes.
_HTTP_LIKE = {"http", "https", "ftp", "ftps"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418, "ftp": 21, "ftps": 990}


class ProjectsPort(Protocol):
    """case's projects.json: repository names and their paths."""

    @property
    def names(self) -> list[str]: ...

    def path_of(self, name: str) -> Path:
        """Raises NotFoundError listing the known names."""
        ...

    def name_of(self, path: Path) -> str | None: ...


def is_remote_url(value: str) -> bool:
    """A URL git would fetch over a transport (``scheme://…``, or scp-like ``[user@]host:path``)."""
    if _SCHEME.match(value):
        return True
    # git's own rule for the scp-like form: a colon before the first slash.
    head = value.split("/", 1)[0]
    return ":" in head and not value.startswith((".", "~")) and not head.endswith(":")


def redact_url(url: str) -> str:
    """``url`` with its credentials removed: the spelling launcher stores and clones from."""
    match = _SCHEME.match(url)
    if match is None:
        scp = _SCP.match(url) if is_remote_url(url) else None
        if scp is None:
            return url
        # scp-like: `user@host:path` keeps the login name; `user:secret@host:path` loses it all.
        user = scp["user"]
        return f"{user + '@' if user and ':' not in user else ''}{scp['host']}:{scp['path']}"
    parts = _split(url)
    scheme = parts.scheme.lower()
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port is not None else "")
    if scheme not in _HTTP_LIKE and parts.username and scheme != "file":
        netloc = f"{parts.username}@{netloc}"
    # A query or fragment can carry a token too; git needs neither to find a repository.
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def normalise_url(url: str) -> str:
    """One key for every spelling of one URL: scheme and host in lower case, no credentials or
    user, no default port, no trailing ``/`` or ``.git``; an scp-like URL as ``ssh://``; a local
    path as ``file://`` (its ``.git`` kept: there it names another folder)."""
    match = _SCHEME.match(url)
    if match is None:
        scp = _SCP.match(url) if is_remote_url(url) else None
        if scp is not None:
            return f"ssh://{scp['host'].lower()}{_network_path('/' + scp['path'].lstrip('/'))}"
        return "file://" + posixpath.normpath(os.path.abspath(os.path.expanduser(url)))
    parts = _split(url)
    scheme = parts.scheme.lower()
    if scheme in {"git+ssh", "ssh+git"}:
        scheme = "ssh"
    if scheme == "file":
        return "file://" + posixpath.normpath(parts.path or "/")
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host + (f":{port}" if port is not None and port != _DEFAULT_PORTS.get(scheme) else "")
    return f"{scheme}://{netloc}{_network_path(parts.path)}"


def _split(url: str) -> SplitResult:
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is no number raises only when read
    except ValueError as exc:
        where = _SCHEME.sub("", url).rsplit("@", 1)[-1]  # never echo what precedes the host
        raise InvalidInputError(f"not a valid repository URL: …{where}", hint=str(exc)) from None
    return parts


def _network_path(path: str) -> str:
    path = re.sub(r"/{2,}", "/", path).rstrip("/")
    path = path.removesuffix(".git").rstrip("/")
    return path or "/"


class Repositories:
    def __init__(
        self,
        projects: ProjectsPort,
        open_repo: Callable[[str], RepoPort],
        *,
        configured: Mapping[str, str] | None = None,
        root: Path | None = None,
        clones: ClonesPort | None = None,
    ) -> None:
        self.projects = projects
        self.open_repo = open_repo
        # launcher.toml's [repos]: name -> local path (relative to the root) or remote URL.
        self.configured = dict(configured or {})
        self.root = root
        self.clones = clones

    # -- naming a repository (task create, run --repo --title, pool warm) ----------------

    def resolve(self, value: str) -> RepoRef:
        """--repo: a projects.json name, a [repos] name, a path, or a remote URL (cloned)."""
        projects = self.projects
        if value in projects.names:
            repository = self.open_repo(str(projects.path_of(value)))
            return self._ref(value, repository)
        if value in self.configured:
            return self._ref(value, self.open_repo(self._configured(value)))
        if is_remote_url(value) and not Path(value).expanduser().exists():
            path = self._clone(value)
            return RepoRef(name=repo_prefix(_url_basename(value)), path=path, url=redact_url(value))
        if projects.names and not Path(value).expanduser().exists() and "/" not in value:
            projects.path_of(value)  # raises NotFoundError listing the known names
        repository = self.open_repo(value)
        name = projects.name_of(repository.toplevel) or repo_prefix(repository.toplevel.name)
        return self._ref(name, repository)

    def check_base(self, repo: RepoRef, base_ref: str) -> None:
        """Refuse a task whose base does not resolve now (no commits yet, unknown ref)."""
        if repo.path is not None:
            self.open_repo(repo.path).resolve_commit(base_ref)

    def url_of(self, toplevel: Path) -> str | None:
        """The repository's remote URL as a task stores it: credentials stripped, a relative
        local path made absolute."""
        if self.clones is None:
            return None
        raw = self.clones.remote_url(toplevel)
        if raw is None or not raw.strip():
            return None
        if not is_remote_url(raw) and not os.path.isabs(os.path.expanduser(raw)):
            raw = posixpath.normpath(str(toplevel / raw))
        try:
            return redact_url(raw)
        except InvalidInputError:
            return None  # a remote git could not use either: the task is named by name and path only

    # -- finding a task's repository (run, batch) ---------------------------------------

    def locate(self, task: TaskRecord, requested: str | None = None) -> str:
        """The top-level folder of ``task``'s repository on this machine (see the module's order);
        a clone is fetched first. NotFoundError naming every way to say where it is."""
        if requested is not None:
            return self._named(requested)
        if task.repo in self.projects.names:
            return str(self.projects.path_of(task.repo))
        if task.repo in self.configured:
            return self._configured(task.repo)
        hint = self._creator_path(task)
        # The creator's "checkout" may be its clone cache, at the same path here (build boxes set
        # up alike): that is this machine's cache, fetched before every run like any clone.
        if hint is not None and not (task.repo_url and self.clones is not None and self.clones.holds(Path(hint))):
            return hint
        if task.repo_url and self.clones is not None:
            return self._clone(task.repo_url)
        raise NotFoundError(
            f"task {task.id}: its repository {task.repo!r} is not on this machine",
            hint=self._unresolved_hint(task),
        )

    def _named(self, value: str) -> str:
        if value in self.projects.names:
            return str(self.projects.path_of(value))
        if value in self.configured:
            return self._configured(value)
        if is_remote_url(value) and not Path(value).expanduser().exists():
            return self._clone(value)
        if self.projects.names and not Path(value).expanduser().exists() and "/" not in value:
            self.projects.path_of(value)  # raises NotFoundError listing the known names
        return str(self.open_repo(value).toplevel)

    def _configured(self, name: str) -> str:
        value = self.configured[name]
        if is_remote_url(value):
            return self._clone(value)
        path = Path(value).expanduser()
        if not path.is_absolute() and self.root is not None:
            path = self.root / path
        return str(self.open_repo(str(path)).toplevel)

    def _creator_path(self, task: TaskRecord) -> str | None:
        """The path the task was made in, if it is here and is the same repository."""
        if not task.repo_path or not Path(task.repo_path).is_dir():
            return None
        try:
            repository = self.open_repo(task.repo_path)
            if task.repo_url:
                here = self.url_of(repository.toplevel)
                same = here is not None and normalise_url(here) == normalise_url(task.repo_url)
                return str(repository.toplevel) if same else None
            # No URL to compare (a repository without remotes): the base must at least resolve.
            repository.resolve_commit(task.base_ref)
        except LauncherError:
            return None
        return str(repository.toplevel)

    def _clone(self, url: str) -> str:
        if self.clones is None:
            raise NotFoundError(f"no clone cache here to clone {redact_url(url)} into")
        return str(self.clones.sync(redact_url(url), normalise_url(url)))

    def _ref(self, name: str, repository: RepoPort) -> RepoRef:
        return RepoRef(name=name, path=str(repository.toplevel), url=self.url_of(repository.toplevel))

    def _unresolved_hint(self, task: TaskRecord) -> str:
        ways = [
            f"`launcher run {task.id} --repo PATH|NAME`",
            f"an entry {task.repo!r} in {'projects.json' if self.root is None else self.root / 'projects.json'}",
            f'`[repos] {task.repo} = "PATH or URL"` in launcher.toml',
        ]
        why = ["the task records no remote URL to clone from" if not task.repo_url else "no clone cache"]
        if task.repo_path:
            there = Path(task.repo_path).is_dir()
            why.append(f"its creator's path {task.repo_path} {'is another repository' if there else 'is not here'}")
        return f"say where it is: {', '.join(ways[:-1])} or {ways[-1]} ({'; '.join(why)})"


def _url_basename(url: str) -> str:
    tail = normalise_url(url).rstrip("/").rsplit("/", 1)[-1]
    return tail.removesuffix(".git") or "repo"

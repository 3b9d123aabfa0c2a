"""Where things live: the case root, launcher's folders under it, and launcher.toml.

Nothing here knows a machine: every path comes from --root, CASE_ROOT or the current
git checkout, and from the run's own layout under that root.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from launcher.errors import InvalidInputError

STATE_DIR_NAME = ".launcher"
CONFIG_NAME = "launcher.toml"
DEFAULT_IMAGE = "launcher/agent-base:latest"
ROOT_ENV = "CASE_ROOT"
STATE_URL_ENV = "LAUNCHER_STATE_URL"
RECONNECT_ENV = "LAUNCHER_RECONNECT_SECONDS"
DEFAULT_RECONNECT_SECONDS = 30.0
MAX_RECONNECT_SECONDS = 3600.0


class ServiceSettings(BaseModel):
    """[run.services.NAME] in launcher.toml: a sidecar container on the run's own network (a database,
    a cache), started before the agent and reachable from it as ``NAME:PORT``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    image: str = Field(description="the service's image (present on the engine: launcher pulls nothing)")
    env: dict[str, str] = Field(default_factory=dict, description="its variables (not secrets: they are in its config)")
    command: list[str] = Field(default_factory=list, description="its command (default: the image's)")
    healthcheck: list[str] = Field(
        default_factory=list,
        description="a command that exits 0 once the service is ready (run in it, `sh -c` for one string); "
        "default: the image's HEALTHCHECK, else ready once started",
    )
    health_timeout: float = Field(
        default=60.0, gt=0, le=3600, description="seconds it gets to become healthy; past them the run fails"
    )
    tmpfs: list[str] = Field(
        default_factory=list, description="writable scratch folders (its root file system is read-only); /tmp always"
    )
    user: str | None = Field(
        default=None,
        description="uid[:gid] it runs as; default: the image's user when that is not root, else the run's uid",
    )
    auto: bool = Field(default=True, description="started for every run; false: only with --service NAME")


class RunDefaults(BaseModel):
    """[run] in launcher.toml: defaults for every run, each overridable on the command line."""

    model_config = ConfigDict(extra="forbid")

    image: str = Field(default=DEFAULT_IMAGE, description="agent image when the task names none")
    command: list[str] = Field(default_factory=list, description="agent command when the task has none")
    timeout: float = Field(default=3600.0, gt=0, description="seconds before the container is killed")
    grace: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="seconds between SIGTERM and SIGKILL when a run is stopped (stop, timeout, Ctrl-C); 0: SIGKILL",
    )
    log_max: int = Field(
        default=256 * 1024 * 1024,
        ge=64 * 1024,
        description="bytes: the biggest log of a run's output; beyond it the middle is dropped (marked in the log)",
    )
    network: Literal["none", "allowlist", "open", "bridge"] | None = Field(
        default=None, description="deprecated: use [network].mode (bridge means open)"
    )
    keep_worktree: bool = Field(default=False, description="keep the worktree after the run ends")
    defer_teardown: bool = Field(
        default=True,
        description="`launcher run` returns once the result is recorded; a child process removes "
        "the container, network and folders after",
    )
    worktrees_dir: str = Field(default=".launcher/worktrees", description="relative to the case root")
    base_ref: str = Field(default="HEAD", description="what a run's branch starts from")
    memory: str = Field(default="2g", description="container memory limit")
    cpus: float = Field(default=1.0, gt=0, description="container CPU limit")
    pids_limit: int = Field(default=512, gt=0, description="container process limit")
    runtime: str | None = Field(default=None, description="OCI runtime, e.g. runsc")
    uid_base: int = Field(default=20000, ge=1000, description="first per-run uid")
    uid_span: int = Field(default=40000, ge=16, description="how many per-run uids rotate")
    bundle_max: int = Field(
        default=512 * 1024 * 1024,
        ge=1024,
        description="bytes: the biggest bundle of a run's work the host imports; a bigger one is kept, not imported",
    )
    disk: int = Field(
        default=20 * 1024**3,
        ge=1024 * 1024,
        description="bytes a run's folders (worktree, private git dir, out/, task copy) may hold; a run that "
        "grows past it is stopped and recorded `exceeded`",
    )
    disk_reserve: int = Field(
        default=1024**3,
        ge=0,
        description="bytes to keep free on the case root's file system (the default: at most a twentieth of "
        "it): a run is not started below it, and a live run is stopped (`exceeded`) when the disk gets there",
    )
    claim_lease: float = Field(
        default=60.0,
        ge=1,
        le=3600,
        description="seconds a run's claim on its task lasts unless renewed (renewed every quarter of it): how "
        "long a launcher that died blocks its task",
    )
    disk_check: float = Field(
        default=2.0, gt=0, le=600, description="seconds between two looks at a live run's disk use"
    )
    setup: list[str] = Field(
        default_factory=list,
        description="commands (each `sh -c CMD`) run in the container before the agent, as the run's uid, "
        "under its network policy; a failing one ends the run `failed` before the agent starts",
    )
    include: list[str] = Field(
        default_factory=list,
        description="untracked files (paths relative to the repository) copied from the main checkout into "
        "each run's worktree: never committed, their values redacted in logs",
    )
    ports: dict[str, int | str] = Field(
        default_factory=dict,
        description='[run.ports] NAME = CONTAINER_PORT (or "SERVICE:PORT", or "": the leased port itself): '
        "a host port leased on 127.0.0.1 for every run, PORT_<NAME> in the agent's environment",
    )
    services: dict[str, ServiceSettings] = Field(
        default_factory=dict, description="[run.services.NAME] tables: sidecar containers on the run's network"
    )


class CoordinatorSettings(BaseModel):
    """[coordinator] in launcher.toml: how launcher talks to a shared (PostgreSQL) coordinator."""

    model_config = ConfigDict(extra="forbid")

    reconnect_seconds: float = Field(
        default=DEFAULT_RECONNECT_SECONDS,
        gt=0,
        le=MAX_RECONNECT_SECONDS,
        description="seconds one coordinator call keeps retrying a server that is away (restarting, failing "
        "over, cut off) before it fails; a batch worker gives up after as long without an answer "
        f"(${RECONNECT_ENV} wins)",
    )


class NetworkSettings(BaseModel):
    """[network] in launcher.toml: what runs may reach, through launcher's egress proxy."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["none", "allowlist", "open", "bridge"] = Field(
        default="allowlist", description="none: only lo; allowlist: named hosts; open: any public host"
    )
    allow: list[str] = Field(default_factory=list, description="HOST, *.SUFFIX or HOST:PORT for every run")
    presets: list[str] = Field(default_factory=list, description="preset names allowed for every run")
    preset: dict[str, list[str]] = Field(default_factory=dict, description="your own presets: name -> hosts")
    subnet_pool: str = Field(default="10.213.0.0/16", description="where per-run /28 networks come from")
    proxy_image: str = Field(default="launcher/egress-proxy:latest", description="image of the egress proxy")
    egress_network: str = Field(default="bridge", description="Docker network the proxy reaches the internet on")
    ca_file: str | None = Field(
        default=None, description="extra CA (PEM) every run trusts, and the egress proxy for --api-key upstreams"
    )
    allow_private: list[str] = Field(
        default_factory=list,
        description="private address ranges (CIDR) the proxy may connect to, for internal mirrors: explicit "
        "opt-in; never the host's own addresses, link-local or metadata addresses",
    )
    proxy_idle: float = Field(
        default=600.0, ge=0, description="seconds with no run before the egress proxy exits by itself; 0: never"
    )
    spare_networks: int = Field(
        default=0,
        ge=0,
        le=16,
        description="allowlist runs' networks kept after a run (the proxy still on them, no policy) for the next "
        "runs to take instead of creating their own; 0: each run's network is removed with it",
    )
    port_range: str = Field(
        default="28000-28999",
        description="LOW-HIGH: the host ports (on 127.0.0.1) runs' --port leases come from, one per name per run",
    )


class PublishSettings(BaseModel):
    """[publish] in launcher.toml: how the host sends a run's work to a forge (never the run)."""

    model_config = ConfigDict(extra="forbid")

    push: bool = Field(default=False, description="push every run's branch after harvest (as --push)")
    remote: str = Field(default="origin", description="remote name of the host repository, or a URL")
    token_env: str | None = Field(
        default=None,
        description="host environment variable holding the forge token (pushes over HTTPS and the REST API); "
        "else git's own credential helper / GIT_ASKPASS",
    )
    token_user: str = Field(
        default="x-access-token",
        min_length=1,
        pattern=r"^[^\s:@/]+$",
        description="the user name the token is sent with over HTTPS when the remote URL names none "
        "(GitHub: any; GitLab: oauth2; Bitbucket: x-token-auth)",
    )
    pr: bool = Field(default=False, description="open (or update) one pull request per task attempt (as --pr)")
    draft: bool = Field(default=True, description="pull requests are opened as drafts")
    forge: Literal["github"] = Field(default="github", description="which forge's REST API opens pull requests")
    api_url: str = Field(
        default="https://api.github.com", description="the forge's REST API (GitHub Enterprise: https://HOST/api/v3)"
    )


class AgentProfile(BaseModel):
    """[agent.NAME] in launcher.toml: how to run one coding agent (built-ins: launcher/core/agents.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field(default="", description="one line saying what the agent is")
    image: str | None = Field(default=None, description="the agent's image (default: [run].image)")
    command: list[str] = Field(
        default_factory=list,
        description="the agent's command; an argument `{prompt}` is replaced by the prompt (one argument, "
        "never a shell string), `{prompt_file}` by the path of the prompt's read-only file",
    )
    env: dict[str, str] = Field(default_factory=dict, description="variables the agent gets (not secrets)")
    api_keys: dict[str, str] = Field(
        default_factory=dict,
        description="NAME -> UPSTREAM, as --api-key NAME=UPSTREAM: the proxy adds the key from launcher's env",
    )
    presets: list[str] = Field(default_factory=list, description="host presets the agent's runs may reach")
    allow: list[str] = Field(default_factory=list, description="hosts the agent's runs may reach")
    setup: list[str] = Field(default_factory=list, description="commands run before the agent, after [run].setup")
    ports: dict[str, int | str] = Field(
        default_factory=dict, description="ports leased for the agent's runs, as [run.ports] (added to them)"
    )
    services: list[str] = Field(
        default_factory=list, description="[run.services] names started for the agent's runs (as --service)"
    )


class AgentSettings(BaseModel):
    """[agent] in launcher.toml: `default = "NAME"` and one [agent.NAME] table per profile."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    default: str | None = Field(default=None, description="the profile of runs that name none (--agent)")
    profiles: dict[str, AgentProfile] = Field(default_factory=dict, description="[agent.NAME] tables")

    @model_validator(mode="before")
    @classmethod
    def _tables(cls, data: object) -> object:
        """TOML puts `default` and the [agent.NAME] tables side by side: every table is a profile."""
        if not isinstance(data, dict) or "profiles" in data:
            return data
        return {
            **{k: v for k, v in data.items() if not isinstance(v, dict)},
            "profiles": {k: v for k, v in data.items() if isinstance(v, dict)},
        }


class CaseSettings(BaseModel):
    """Which layout of case new tasks follow, and where today's case keeps its user config."""

    model_config = ConfigDict(extra="forbid")

    layout: Literal["auto", "harness", "repo-local"] = Field(
        default="auto",
        description="where new tasks' files go: harness = tasks/active/ under the case root (case at 3aa5f23); "
        "repo-local = <repo>/.case/tasks/active/ (case at 30b1fa1); auto = repo-local for a repository "
        "whose .case/tasks/ exists, else harness",
    )
    data_dir: str | None = Field(
        default=None,
        description="case's data dir (config.json, projects.json); default as case finds it: "
        "$CASE_DATA_DIR, else $XDG_CONFIG_HOME/case, else ~/.config/case",
    )


class LauncherConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state_url: str | None = Field(default=None, description="coordinator URL; default SQLite in .launcher")
    run: RunDefaults = Field(default_factory=RunDefaults)
    coordinator: CoordinatorSettings = Field(default_factory=CoordinatorSettings)
    network: NetworkSettings = Field(default_factory=NetworkSettings)
    publish: PublishSettings = Field(default_factory=PublishSettings)
    agent: AgentSettings = Field(default_factory=AgentSettings)
    case: CaseSettings = Field(default_factory=CaseSettings)
    repos: dict[str, str] = Field(
        default_factory=dict,
        description="repository name -> local path or remote URL, for tasks whose repository is not in projects.json",
    )


DEFAULT_CONFIG_TEXT = """\
# launcher configuration. Every value here is a default; command-line options win.

# Coordinator. Default: SQLite at .launcher/state.db under the case root.
# LAUNCHER_STATE_URL and --state-url override it.
# state_url = "postgresql://launcher@db/launcher"

[coordinator]
# reconnect_seconds = 30                  # seconds a call rides out a PostgreSQL restart or cut (env wins:
#                                         # LAUNCHER_RECONNECT_SECONDS); a batch worker gives up after it

[run]
# image = "launcher/agent-base:latest"   # agent image when a task names none
# command = ["bash", "-lc", "make test"] # agent command when a task has none
# timeout = 3600                          # seconds; the container is killed after it
# grace = 10                              # seconds from SIGTERM to SIGKILL when a run is stopped
# log_max = 268435456                     # bytes (256 MiB) of a run's log; the middle of more is dropped
# keep_worktree = false                   # keep each run's worktree after it ends
# defer_teardown = true                   # `launcher run` exits once the result is recorded; a child it
#                                         # forks removes the container, network and folders after
# worktrees_dir = ".launcher/worktrees"   # relative to the case root
# base_ref = "HEAD"                       # what run branches start from
# memory = "2g"
# cpus = 1.0
# pids_limit = 512
# runtime = "runsc"                       # optional OCI runtime (gVisor)
# uid_base = 20000                        # per-run uids are uid_base + (run number % uid_span)
# uid_span = 40000
# bundle_max = 536870912                  # bytes (512 MiB): a run whose bundle is bigger ends unharvested, bundle kept
# disk = 21474836480                     # bytes (20 GiB) a run's folders may hold; past it the run is stopped
# disk_reserve = 1073741824               # bytes (1 GiB) kept free on the root's disk: runs stop before it fills
# claim_lease = 60                        # seconds a dead launcher's claim blocks its task (renewed every 15 s)
# disk_check = 2                          # seconds between two looks at a live run's disk use
# setup = ["pip install -e ."]            # run in the container before the agent (each as sh -c CMD)
# include = [".env"]                      # untracked files copied into each run's worktree, never committed

[agent]
# Agent profiles: `launcher run --agent NAME`; `launcher agent list` shows them all.
# Built in: claude codex gemini aider opencode shell. A table of the same name overrides one.
# default = "aider"                       # the profile of runs that name none
#
# [agent.mine]
# description = "my own agent script"
# image = "registry.example.com/my-agent:1"
# command = ["my-agent", "--task-file", "{prompt_file}"]   # {prompt}: the prompt as one argument
# env = { MY_AGENT_QUIET = "1" }
# api_keys = { OPENAI_API_KEY = "https://api.openai.com" }
# presets = ["pypi"]
# allow = ["git.example.com"]
# setup = ["pip install -e ."]

[network]
# What runs may reach. Every run gets a network of its own whose only way out is launcher's
# egress proxy; `launcher logs --egress RUN` shows what a run tried to reach.
# mode = "allowlist"                      # none (only lo) | allowlist (named hosts) | open (any public host)
# allow = ["pypi.org", "*.example.com", "git.example.com:22"]   # no port: 80 and 443
# presets = ["pypi", "github"]            # built in: pypi debian npm github anthropic openai
# subnet_pool = "10.213.0.0/16"           # each run takes a /28 from here
# egress_network = "bridge"               # where the proxy itself reaches the internet
# ca_file = "/etc/ssl/corp-ca.pem"        # extra CA every run trusts (and the proxy, for --api-key upstreams)
# allow_private = ["10.20.0.0/16"]        # private ranges internal mirrors live in; never loopback/link-local/metadata
# proxy_idle = 600                        # seconds with no run before the proxy exits; 0: never
# spare_networks = 2                      # keep this many runs' networks for the next runs (faster launch); 0: never
#
# [network.preset]
# mirrors = ["mirror.example.com", "*.cdn.example.com"]

[publish]
# Results leave only from the host, with the host's credentials; a run never holds them.
# push = false                            # push every run's branch after harvest (as --push)
# remote = "origin"                       # remote of the host repository, or a URL
# token_env = "GITHUB_TOKEN"              # host variable holding the forge token; else git's credential helper
# token_user = "x-access-token"           # user sent with the token (GitLab: "oauth2")
# pr = false                              # open or update one pull request per task attempt (as --pr)
# draft = true
# api_url = "https://api.github.com"      # GitHub Enterprise: "https://HOST/api/v3"

[case]
# Both layouts of case are understood; `launcher init` says which it found.
# layout = "auto"                         # harness (tasks/ under the root) | repo-local (<repo>/.case/) | auto
# data_dir = "~/.config/case"             # today's case's config.json + projects.json (default as case finds it)

[repos]
# Where a task's repository is on this machine when projects.json does not say:
# name = "/srv/checkouts/name"  or  name = "https://git.example.com/team/name.git" (cloned on demand)
"""


class Layout:
    """launcher's folders under one case root."""

    def __init__(self, root: Path, config: LauncherConfig | None = None) -> None:
        self.root = root
        self.config = config or LauncherConfig()

    @property
    def state_dir(self) -> Path:
        return self.root / STATE_DIR_NAME

    @property
    def state_db(self) -> Path:
        return self.state_dir / "state.db"

    @property
    def locks_dir(self) -> Path:
        return self.state_dir / "locks"

    @property
    def runs_dir(self) -> Path:
        """Host-only per-run records: logs, harvested bundles. Never mounted into a run."""
        return self.state_dir / "runs"

    @property
    def clones_dir(self) -> Path:
        """Host-only clone cache: repositories named by remote URL, cloned on demand."""
        return self.state_dir / "clones"

    @property
    def marks_dir(self) -> Path:
        """Which folders launcher made (host only): the only ones gc may remove."""
        return self.state_dir / "marks"

    @property
    def teardown_dir(self) -> Path:
        """One lock per settled run being taken apart (host only): gc and rm wait for them."""
        return self.state_dir / "teardown"

    @property
    def egress_dir(self) -> Path:
        """The egress proxy's policy files (in) and decision logs (out)."""
        return self.state_dir / "egress"

    @property
    def worktrees_dir(self) -> Path:
        """[run].worktrees_dir under the root; InvalidInputError where it is not a folder of its own."""
        return check_worktrees_dir(self.root, self.config.run.worktrees_dir)

    @property
    def tasks_dir(self) -> Path:
        return self.root / "tasks"

    @property
    def config_file(self) -> Path:
        return self.root / CONFIG_NAME

    def state_url(self, override: str | None = None) -> str:
        url = override or os.environ.get(STATE_URL_ENV) or self.config.state_url
        return url or f"sqlite:///{self.state_db}"

    @property
    def reconnect_seconds(self) -> float:
        """[coordinator] reconnect_seconds, unless $LAUNCHER_RECONNECT_SECONDS says otherwise."""
        return resolve_reconnect_seconds(self.config.coordinator)


def resolve_reconnect_seconds(
    configured: CoordinatorSettings | None = None, environ: dict[str, str] | None = None
) -> float:
    """How long a coordinator call retries a server that is away: the environment's value, else
    launcher.toml's, else 30 s."""
    raw = (os.environ if environ is None else environ).get(RECONNECT_ENV, "").strip()
    if not raw:
        return (configured or CoordinatorSettings()).reconnect_seconds
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 < value <= MAX_RECONNECT_SECONDS:  # NaN fails this too
        raise InvalidInputError(
            f"${RECONNECT_ENV}={raw!r} is not a number of seconds in (0, {MAX_RECONNECT_SECONDS:.0f}]",
            hint=f"e.g. {RECONNECT_ENV}=30, or unset it to use [coordinator] reconnect_seconds",
        )
    return value


def check_worktrees_dir(root: Path, configured: str) -> Path:
    """Where runs' worktrees go, refused where launcher's folders would mix with what is not
    launcher's: the file system root, the case root or a folder above it, launcher's own state
    (other than the default .launcher/worktrees) or tasks folder, a repository's git dir."""
    given = Path(configured).expanduser()
    path = Path(os.path.abspath(given if given.is_absolute() else root / given))
    # realpath: a symlink on the way may lead to any of these places.
    real, real_root = Path(os.path.realpath(path)), Path(os.path.realpath(root))
    state = real_root / STATE_DIR_NAME
    why: str | None = None
    if real == Path(real.anchor):
        why = "is the file system's root"
    elif real == real_root:
        why = "is the case root itself"
    elif real_root.is_relative_to(real):
        why = "holds the case root"
    elif real.is_relative_to(state) and not real.is_relative_to(state / "worktrees"):
        why = f"is inside launcher's own {STATE_DIR_NAME}/ folder (only {STATE_DIR_NAME}/worktrees may be)"
    elif real.is_relative_to(real_root / "tasks"):
        why = "is inside the harness's tasks/ folder"
    elif _inside_git_dir(real):
        why = "is inside a repository's git dir"
    if why is not None:
        raise InvalidInputError(
            f"[run].worktrees_dir {configured!r} ({real}) {why}: runs' worktrees need a folder of their own",
            hint='leave it unset (.launcher/worktrees) or name an empty folder, e.g. worktrees_dir = "/srv/worktrees"',
        )
    return path


def _inside_git_dir(path: Path) -> bool:
    """A `.git` folder on the way, or a folder that is a git dir (a bare repository's)."""
    for folder in (path, *path.parents):
        if folder.name == ".git":
            return True
        if (folder / "HEAD").is_file() and (folder / "objects").is_dir() and (folder / "refs").is_dir():
            return True
    return False


def resolve_root(explicit: str | None, *, cwd: Path | None = None) -> Path:
    """--root, else CASE_ROOT, else the git top-level of the current directory."""
    chosen = explicit or os.environ.get(ROOT_ENV)
    if chosen:
        root = Path(chosen).expanduser()
        if not root.is_dir():
            raise InvalidInputError(f"case root {root} is not a directory")
        return root.resolve()
    here = cwd or Path.cwd()
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=here,
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("GIT_")},
        )
    except FileNotFoundError:
        out = None
    if out is None or out.returncode != 0 or not out.stdout.strip():
        raise InvalidInputError(
            "no case root: pass --root, set CASE_ROOT, or run inside a git checkout",
        )
    return Path(out.stdout.strip()).resolve()


def load_config(root: Path) -> LauncherConfig:
    path = root / CONFIG_NAME
    if not path.exists():
        return LauncherConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        config = LauncherConfig.model_validate(data)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInputError(f"{path} is not valid TOML: {exc}") from exc
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise InvalidInputError(f"{path}: {problems}") from exc
    try:
        check_worktrees_dir(root, config.run.worktrees_dir)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: {exc.message}", hint=exc.hint) from exc
    return config

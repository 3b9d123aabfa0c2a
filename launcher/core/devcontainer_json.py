"""A repository's devcontainer.json, read as launcher can honour it (pure: bytes in, a model out).

devcontainer.json is JSON with comments and trailing commas ("JSONC"). Every key is
classified: used, refused with the reason (launcher cannot give it to a run without breaking
the sandbox, or it needs what a run does not have), or ignored with a note for the run's
record (editor-only, or already what every run gets). Nothing is dropped silently.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field

from launcher.errors import InvalidInputError

# Where launcher looks, in this order (the spec's two places for one configuration).
DEVCONTAINER_PATHS = (".devcontainer/devcontainer.json", ".devcontainer.json")
MAX_DEVCONTAINER_BYTES = 1 << 20
CONTAINER_WORKSPACE = "/workspace"

# The lifecycle commands that run once when a container is made, in the spec's order.
SETUP_KEYS = ("onCreateCommand", "updateContentCommand", "postCreateCommand", "postStartCommand")

# Keys that ask for something a run cannot have: refused, with why and what to do instead.
REFUSED = {
    "features": "features are installed from an OCI registry at build time, which launcher does not do; "
    "install the tools in the devcontainer's Dockerfile (build.dockerfile) instead",
    "initializeCommand": "initializeCommand runs on the host, and launcher never runs a repository's commands "
    "on the host; move it into onCreateCommand/postCreateCommand (they run inside the run)",
    "mounts": "mounts would bind host folders or volumes into the run; a run sees only its own worktree",
    "workspaceMount": "the run's worktree is always mounted at /workspace by launcher",
    "runArgs": "runArgs are raw `docker run` flags that would override the run's security profile",
    "privileged": "runs are never privileged",
    "capAdd": "runs drop every capability",
    "securityOpt": "runs keep launcher's security options (no-new-privileges)",
    "dockerComposeFile": "Docker Compose setups are not supported: a run is one container",
    "service": "Docker Compose setups are not supported: a run is one container",
    "runServices": "Docker Compose setups are not supported: a run is one container",
    "overrideFeatureInstallOrder": "features are not supported",
}
# A refused key with one of these values asks for nothing, so it is accepted.
HARMLESS: tuple[object, ...] = ({}, [], False, None, "")

# Keys that change nothing in a run, each with the note for the run's record.
IGNORED = {
    "name": "only a display name",
    "customizations": "editor settings and extensions",
    "extensions": "editor extensions",
    "settings": "editor settings",
    "$schema": "only names the schema",
    "forwardPorts": "nothing is forwarded out of a run (processes inside can still listen)",
    "portsAttributes": "nothing is forwarded out of a run",
    "otherPortsAttributes": "nothing is forwarded out of a run",
    "appPort": "nothing is published from a run",
    "postAttachCommand": "runs when an editor attaches; nothing attaches to a run",
    "waitFor": "every setup command finishes before the agent starts",
    "remoteUser": "a run executes as its own unprivileged uid",
    "containerUser": "a run executes as its own unprivileged uid",
    "updateRemoteUserUID": "a run executes as its own unprivileged uid",
    "userEnvProbe": "the run's environment is the image's plus containerEnv and remoteEnv, no shell is probed",
    "overrideCommand": "launcher always runs its own entry, then the agent",
    "shutdownAction": "a run's container is removed when the run ends",
    "init": "every run has an init process",
    "workspaceFolder": "the worktree is always /workspace",
    "hostRequirements": "a run gets launcher's own CPU, memory and pids limits",
    "secrets": "recommended secrets are not passed; give a run a secret with --secret NAME",
    "gpuRequirements": "runs get no GPU",
}
USED = {"image", "build", "dockerFile", "context", "containerEnv", "remoteEnv", *SETUP_KEYS}

# launcher's own variables in a run: a repository's configuration must not redirect them.
_RESERVED_ENV = re.compile(
    r"^(HOME|CASE_.*|LAUNCHER_.*|GIT_.*|(HTTPS?|ALL|NO)_PROXY|(https?|all|no)_proxy|"
    r"SSL_CERT_FILE|SSL_CERT_DIR|REQUESTS_CA_BUNDLE|NODE_EXTRA_CA_CERTS|PIP_CERT|CURL_CA_BUNDLE)$"
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class DevcontainerBuild(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    dockerfile: str = Field(description="the Dockerfile's path inside the context folder")
    context: str = Field(description="the context folder, relative to the repository's top ('' is the top)")
    args: dict[str, str] = Field(default_factory=dict, description="build arguments")
    target: str | None = Field(default=None, description="the stage to build")


class Devcontainer(BaseModel):
    """What launcher takes from a devcontainer.json."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="where it was read from, relative to the repository's top")
    image: str | None = Field(default=None, description="the image the environment starts from")
    build: DevcontainerBuild | None = Field(default=None, description="or the Dockerfile it is built from")
    container_env: dict[str, str] = Field(default_factory=dict, description="containerEnv: set in the run")
    remote_env: dict[str, str] = Field(
        default_factory=dict, description="remoteEnv, ${containerEnv:NAME} still to be resolved against the image"
    )
    setup: list[str] = Field(default_factory=list, description="lifecycle commands, as shell strings, in order")
    notes: list[str] = Field(default_factory=list, description="what was ignored and why")


def strip_jsonc(text: str) -> str:
    """``text`` as plain JSON: comments and trailing commas become spaces (newlines kept), so
    json's error positions still point into the original."""
    out = list(text)
    i, n = 0, len(text)
    last_comma = -1  # index of a comma that may turn out to be trailing
    prev = "{"  # the last character outside comments and blanks ('"' for a string)
    while i < n:
        c = text[i]
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            last_comma = -1
        elif text.startswith(("//", "/*"), i):
            if text.startswith("//", i):
                end = text.find("\n", i)
            else:
                end = text.find("*/", i + 2)
                end = end + 2 if end >= 0 else -1
            end = n if end < 0 else end  # unterminated: json then says what is missing
            for j in range(i, end):
                if out[j] != "\n":
                    out[j] = " "
            i = end
            continue
        elif c == ",":
            # Only a comma after a value can be trailing: "{," and ",," stay for json to refuse.
            last_comma = i if prev not in "{[," else -1
        elif c in "]}" and last_comma >= 0:
            out[last_comma] = " "
            last_comma = -1
        elif not c.isspace():
            last_comma = -1
        if not c.isspace():
            prev = c
        i += 1
    return "".join(out)


def load_jsonc(data: bytes, where: str) -> object:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidInputError(f"{where} is not UTF-8 text: {exc}") from None
    try:
        return json.loads(strip_jsonc(text))
    except json.JSONDecodeError as exc:
        raise InvalidInputError(
            f"{where} is not valid JSON with comments: {exc.msg} at line {exc.lineno}, column {exc.colno}"
        ) from None


def parse_devcontainer(data: bytes, path: str, *, repo_name: str) -> Devcontainer:
    """The devcontainer.json at ``path`` (its bytes), checked; InvalidInputError naming the key otherwise."""
    where = path
    if len(data) > MAX_DEVCONTAINER_BYTES:
        raise InvalidInputError(f"{where} is larger than {MAX_DEVCONTAINER_BYTES} bytes")
    doc = load_jsonc(data, where)
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{where}: the top level must be an object")
    for key, why in REFUSED.items():
        if key in doc and doc[key] not in HARMLESS:
            raise InvalidInputError(f"{where}: {key!r} cannot be honoured: {why}")
    notes = []
    for key in doc:
        if key in IGNORED:
            notes.append(f"{where}: {key!r} ignored: {IGNORED[key]}")
        elif key not in USED and key not in REFUSED:
            notes.append(f"{where}: {key!r} ignored: not a devcontainer.json key launcher knows")
    subst = _Substitution(where, repo_name)
    image = doc.get("image")
    if image is not None and (not isinstance(image, str) or not image.strip()):
        raise InvalidInputError(f"{where}: 'image' must be an image reference (a non-empty string)")
    build = _build(doc, path, subst)
    if image and build:
        raise InvalidInputError(f"{where}: give either 'image' or 'build.dockerfile', not both")
    if not image and not build:
        raise InvalidInputError(
            f"{where} names no environment: it needs 'image' or 'build.dockerfile'",
            hint="launcher supports single-container devcontainers; Compose setups are refused",
        )
    return Devcontainer(
        path=path,
        image=image,
        build=build,
        container_env=_env(doc, "containerEnv", where, subst, container_env_ok=False),
        remote_env=_env(doc, "remoteEnv", where, subst, container_env_ok=True),
        setup=[cmd for key in SETUP_KEYS if key in doc for cmd in _commands(doc[key], f"{where}: {key!r}", subst)],
        notes=notes,
    )


def resolve_container_env(value: str, image_env: Mapping[str, str]) -> str:
    """``${containerEnv:NAME}`` (or ``${containerEnv:NAME:default}``) as the image sets NAME."""

    def one(match: re.Match[str]) -> str:
        _, _, rest = match.group(1).partition(":")
        name, _, default = rest.partition(":")
        return image_env.get(name, default)

    return _VARIABLE.sub(one, value)


class _Substitution:
    """The spec's ``${…}`` variables: those about the container are known here; the host's
    environment is never read (it holds the user's credentials), so ``${localEnv:…}`` is refused."""

    def __init__(self, where: str, repo_name: str) -> None:
        self.where = where
        self.known = {
            "containerWorkspaceFolder": CONTAINER_WORKSPACE,
            "containerWorkspaceFolderBasename": posixpath.basename(CONTAINER_WORKSPACE),
            "localWorkspaceFolderBasename": repo_name,
        }

    def __call__(self, value: str, what: str, *, container_env_ok: bool = False) -> str:
        def one(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in self.known:
                return self.known[name]
            if name.startswith("containerEnv:") and container_env_ok:
                return match.group(0)
            if name.startswith("localEnv:"):
                raise InvalidInputError(
                    f"{what}: ${{{name}}} would copy the host's environment into the run; launcher never does",
                    hint="write the value out, or pass a secret with --secret NAME",
                )
            raise InvalidInputError(f"{what}: the variable ${{{name}}} is not supported here")

        return _VARIABLE.sub(one, value)


def _inside(path: str, where: str, what: str) -> str:
    """``path`` (relative to the repository's top) normalised; refused if it leaves the repository."""
    if posixpath.isabs(path):
        raise InvalidInputError(f"{where}: {what} {path!r} must be relative to the devcontainer.json")
    norm = posixpath.normpath(path)
    if norm == ".." or norm.startswith("../"):
        raise InvalidInputError(f"{where}: {what} {path!r} points outside the repository")
    return "" if norm == "." else norm


def _build(doc: dict[str, object], path: str, subst: _Substitution) -> DevcontainerBuild | None:
    where = path
    raw = doc.get("build")
    if raw is None and "dockerFile" in doc:  # the spec's older spelling
        raw = {"dockerfile": doc["dockerFile"], "context": doc.get("context", ".")}
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidInputError(f"{where}: 'build' must be an object")
    unknown = sorted(set(raw) - {"dockerfile", "context", "args", "target", "cacheFrom", "options"})
    if unknown:
        raise InvalidInputError(f"{where}: build keys {unknown} are not known")
    if raw.get("options"):
        raise InvalidInputError(f"{where}: 'build.options' are raw `docker build` flags; launcher does not pass them")
    dockerfile, context = raw.get("dockerfile"), raw.get("context", ".")
    if not isinstance(dockerfile, str) or not dockerfile:
        raise InvalidInputError(f"{where}: 'build' needs 'dockerfile' (a path relative to the devcontainer.json)")
    if not isinstance(context, str):
        raise InvalidInputError(f"{where}: 'build.context' must be a path")
    folder = posixpath.dirname(path)
    context_dir = _inside(posixpath.join(folder, context), where, "build.context")
    dockerfile_path = _inside(posixpath.join(folder, dockerfile), where, "build.dockerfile")
    inner = posixpath.relpath(dockerfile_path, context_dir or ".")
    if inner.startswith("../"):
        raise InvalidInputError(
            f"{where}: build.dockerfile {dockerfile!r} is outside build.context {context!r}",
            hint="the Dockerfile must be inside the build context launcher sends (from the base commit)",
        )
    target = raw.get("target")
    if target is not None and not isinstance(target, str):
        raise InvalidInputError(f"{where}: 'build.target' must be a stage name")
    args = _string_map(raw.get("args", {}), f"{where}: 'build.args'")
    return DevcontainerBuild(
        dockerfile=inner,
        context=context_dir,
        args={k: subst(v, f"{where}: build.args {k}") for k, v in args.items()},
        target=target or None,
    )


def _string_map(raw: object, what: str) -> dict[str, str]:
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise InvalidInputError(f"{what} must be an object of strings")
    return {str(k): v for k, v in raw.items()}


def _env(
    doc: dict[str, object], key: str, where: str, subst: _Substitution, *, container_env_ok: bool
) -> dict[str, str]:
    env = _string_map(doc.get(key, {}), f"{where}: {key!r}")
    for name in env:
        if not _ENV_NAME.match(name):
            raise InvalidInputError(f"{where}: {key} {name!r} is not a valid variable name")
        if _RESERVED_ENV.match(name):
            raise InvalidInputError(
                f"{where}: {key} sets {name}, which launcher sets for every run (its git, proxy, trust store "
                "and paths); a repository's configuration cannot change it"
            )
    return {n: subst(v, f"{where}: {key} {n}", container_env_ok=container_env_ok) for n, v in env.items()}


def _commands(raw: object, what: str, subst: _Substitution) -> list[str]:
    """A lifecycle command as shell strings: a string is one, an array is one (quoted as
    words), an object is one per entry (run one after another here, not in parallel)."""
    if isinstance(raw, str):
        return [subst(raw, what)] if raw.strip() else []
    if isinstance(raw, list):
        if not all(isinstance(word, str) for word in raw):
            raise InvalidInputError(f"{what}: an array command must be all strings")
        return [shlex.join(subst(word, what) for word in raw)] if raw else []
    if isinstance(raw, dict):
        return [cmd for name, each in raw.items() for cmd in _commands(each, f"{what}.{name}", subst)]
    raise InvalidInputError(f"{what} must be a string, an array of strings or an object of them")

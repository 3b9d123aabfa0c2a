"""`launcher config show`: every effective setting of a case root and where its value came from.

Precedence is the one the code applies: this command line's global options, then launcher's
environment, then launcher.toml, then the default. Only reads: nothing is created under the
root, and no state store is opened. Secrets never appear: URLs lose their credentials, tokens
are named by the variable holding them, and agent `env` values whose names look like secrets
are masked.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, JsonValue

from launcher.core import agents
from launcher.core.netpolicy import normalise_mode
from launcher.core.repos import redact_url
from launcher.models.config import SettingSource, SettingView
from launcher.settings import (
    CONFIG_NAME,
    RECONNECT_ENV,
    ROOT_ENV,
    STATE_URL_ENV,
    LauncherConfig,
    Layout,
    resolve_reconnect_seconds,
)

# Read by `launcher image build` (launcher/cli/image_cmd.py, launcher/adapters/docker/images.py):
# settings of the host, not of launcher.toml, so they appear under `image.` with env or default.
IMAGES_DIR_ENV = "LAUNCHER_IMAGES_DIR"
EXTRA_CA_ENV = "LAUNCHER_EXTRA_CA_CERTS"
MASK = "***"
# An agent profile's `env` is documented as "not secrets"; a name like these says someone put one there.
_SECRET_NAME = re.compile(r"token|secret|passw|key|credential|auth|cookie|session", re.IGNORECASE)
# Values that may be URLs with credentials in them (a remote, a forge API, a repository).
_URL_KEYS = frozenset({"publish.remote", "publish.api_url"})
_TABLES = frozenset({"preset"})  # [network.preset] NAME = [...]: one entry per NAME
# Defaults that are not the whole story of what a run gets.
_DEFAULT_NOTES = {"run.disk_reserve": "at most a twentieth of the root's disk"}


@dataclass(frozen=True)
class Invocation:
    """What this command line and launcher's environment said, before any file was read."""

    root_option: str | None
    state_url_option: str | None
    environ: Mapping[str, str]


class UnknownSettingError(ValueError):
    """A key `config show` was asked for that is neither a setting nor a section."""


def effective_settings(
    root: Path,
    config: LauncherConfig,
    invocation: Invocation,
    *,
    redact_state_url: Callable[[str], str],
) -> list[SettingView]:
    """Every setting of ``root``, in launcher.toml's order, grouped by section.

    ``redact_state_url`` shows a coordinator URL without its password (the store adapter's own
    spelling, so `config show` and the store's messages agree)."""
    path = root / CONFIG_NAME
    from_file: SettingSource = "launcher.toml"
    file_origin = str(path)
    env = invocation.environ
    out: list[SettingView] = []

    def add(key: str, value: Any, source: SettingSource, origin: str | None = None) -> None:
        out.append(SettingView(key=key, value=_json(value), source=source, origin=origin))

    # -- the root and the coordinator: flag, env, launcher.toml, default ---------------------
    if invocation.root_option:
        add("root", str(root), "flag", "--root")
    elif env.get(ROOT_ENV):
        add("root", str(root), "env", ROOT_ENV)
    else:
        add("root", str(root), "default", "the current git checkout's top level")

    layout = Layout(root, config)
    if invocation.state_url_option:
        add("state_url", redact_state_url(invocation.state_url_option), "flag", "--state-url")
    elif env.get(STATE_URL_ENV):
        add("state_url", redact_state_url(env[STATE_URL_ENV]), "env", STATE_URL_ENV)
    elif config.state_url:
        add("state_url", redact_state_url(config.state_url), from_file, file_origin)
    else:
        add("state_url", f"sqlite:///{layout.state_db}", "default", "SQLite under the root")

    coordinator = config.coordinator
    if env.get(RECONNECT_ENV, "").strip():
        add("coordinator.reconnect_seconds", resolve_reconnect_seconds(coordinator, dict(env)), "env", RECONNECT_ENV)
    else:
        _fields(add, "coordinator", coordinator, file_origin)

    # -- [run], [network], [publish] ---------------------------------------------------------
    run = config.run
    # The deprecated [run] network: shown only where a launcher.toml still says it.
    _fields(add, "run", run, file_origin, skip={"network"} if run.network is None else set())
    network = config.network
    if run.network is not None:
        # It wins over [network] mode, as a run resolves it (core/run/plan.py).
        origin = f"{file_origin}: [run] network, deprecated"
        add("network.mode", normalise_mode(run.network), from_file, origin)
    _fields(add, "network", network, file_origin, skip={"mode"} if run.network is not None else set())
    _fields(add, "publish", config.publish, file_origin)

    # -- [case]: the data dir as case itself finds it when launcher.toml names none -----------
    case = config.case
    _fields(add, "case", case, file_origin, skip={"data_dir"})
    if "data_dir" in case.model_fields_set:
        add("case.data_dir", case.data_dir, from_file, file_origin)
    elif env.get("CASE_DATA_DIR"):
        add("case.data_dir", env["CASE_DATA_DIR"], "env", "CASE_DATA_DIR")
    elif env.get("XDG_CONFIG_HOME"):
        add("case.data_dir", f"{env['XDG_CONFIG_HOME']}/case", "env", "XDG_CONFIG_HOME, as case reads it")
    else:
        add("case.data_dir", f"{env.get('HOME', '~')}/.config/case", "default", "case's own: ~/.config/case")

    # -- [agent]: default, then every profile (built in, or launcher.toml's table) ------------
    agent = config.agent
    if "default" in agent.model_fields_set:
        add("agent.default", agent.default, from_file, file_origin)
    else:
        add("agent.default", agent.default, "default")
    for entry in agents.profiles(agent):
        prefix = f"agent.{entry.name}"
        if entry.source == "built-in":
            for name in type(entry.profile).model_fields:
                add(f"{prefix}.{name}", _profile_value(name, getattr(entry.profile, name)), "default", "built-in")
        else:
            for name in type(entry.profile).model_fields:
                value = _profile_value(name, getattr(entry.profile, name))
                if name in entry.profile.model_fields_set:
                    add(f"{prefix}.{name}", value, from_file, file_origin)
                else:
                    add(f"{prefix}.{name}", value, "default")

    # -- [repos] NAME = PATH | URL -----------------------------------------------------------
    if config.repos:
        for name, where in config.repos.items():
            add(f"repos.{name}", redact_url(where), from_file, file_origin)
    else:
        add("repos", {}, "default")

    # -- what `launcher image build` reads from the environment --------------------------------
    if env.get(IMAGES_DIR_ENV):
        add("image.images_dir", env[IMAGES_DIR_ENV], "env", IMAGES_DIR_ENV)
    else:
        add("image.images_dir", None, "default", "the build contexts installed with launcher, else images/")
    if env.get(EXTRA_CA_ENV):
        # PEM text, many lines: its size says it is there, `printenv` shows it.
        add("image.extra_ca_certs", f"<{len(env[EXTRA_CA_ENV].encode())} bytes of PEM>", "env", EXTRA_CA_ENV)
    else:
        add("image.extra_ca_certs", None, "default")
    return out


def select(settings: list[SettingView], keys: Iterable[str]) -> list[SettingView]:
    """The settings named by ``keys`` (a key, or a section such as `run` or `agent.claude`), in
    the listing's order; UnknownSettingError naming close matches for a key that is neither."""
    wanted = list(dict.fromkeys(keys))
    if not wanted:
        return settings
    known = [s.key for s in settings]
    sections = sorted({".".join(k.split(".")[:n]) for k in known for n in range(1, k.count(".") + 1)})
    unknown = [k for k in wanted if k not in known and k not in sections]
    if unknown:
        raise UnknownSettingError("; ".join(_unknown(k, known, sections) for k in unknown))
    return [s for s in settings if any(s.key == k or s.key.startswith(k + ".") for k in wanted)]


def render_value(value: JsonValue) -> str:
    """A value as the text table shows it: TOML's spelling for scalars, inline JSON otherwise."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        # Empty, or with characters a one-line table cannot show: quoted, escaped.
        return value if value and value.isprintable() else _dumps(value)
    if isinstance(value, int | float):
        return str(value)
    return _dumps(value)


def render_source(setting: SettingView) -> str:
    if setting.source == "default":
        return f"default ({setting.origin})" if setting.origin else "default"
    if setting.source == "launcher.toml":
        return f"launcher.toml ({setting.origin})"
    return f"{setting.source} {setting.origin}"


def section_of(key: str) -> str:
    """The group a key is shown in: its first part (`run`, `agent`, …), `` for root and state_url."""
    return key.split(".", 1)[0] if "." in key else ""


def _fields(
    add: Callable[[str, Any, SettingSource, str | None], None],
    section: str,
    model: BaseModel,
    file_origin: str,
    *,
    skip: set[str] | None = None,
) -> None:
    """One entry per field of a launcher.toml table: from the file when it names the field."""
    for name in type(model).model_fields:
        if name in (skip or set()):
            continue
        value = getattr(model, name)
        key = f"{section}.{name}"
        if key in _URL_KEYS and isinstance(value, str):
            value = redact_url(value)
        source: SettingSource = "launcher.toml" if name in model.model_fields_set else "default"
        origin = file_origin if source == "launcher.toml" else _DEFAULT_NOTES.get(key)
        if name in _TABLES and isinstance(value, dict) and value:
            for entry, hosts in value.items():
                add(f"{key}.{entry}", hosts, source, origin)
            continue
        add(key, value, source, origin)


def _profile_value(name: str, value: Any) -> Any:
    if name == "env" and isinstance(value, dict):
        return {k: MASK if _SECRET_NAME.search(k) else v for k, v in value.items()}
    return value


def _json(value: Any) -> JsonValue:
    if isinstance(value, BaseModel):
        dumped: JsonValue = value.model_dump(mode="json")
        return dumped
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _unknown(key: str, known: list[str], sections: list[str]) -> str:
    candidates = [*sections, *known]
    close = difflib.get_close_matches(key, candidates, n=3, cutoff=0.6)
    # `timeout` for `run.timeout`: the last part alone is what people type.
    tail = [k for k in known if k.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
    matches = list(dict.fromkeys([*close, *tail]))[:5]
    said = f"did you mean {', '.join(matches)}?" if matches else "`launcher config show` lists every key"
    return f"no setting {key!r}: {said}"


def _dumps(value: JsonValue) -> str:
    return json.dumps(value, ensure_ascii=False)

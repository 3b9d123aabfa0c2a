"""[run] include: what launcher copies into a run, and everything it refuses before anything is made."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core.run import RunRequest
from launcher.core.run.include import check_include_name, read_includes, redaction_values
from launcher.errors import InvalidInputError


def checkout(world: FakeWorld) -> Path:
    top = world.repo.toplevel
    (top / "config").mkdir()
    (top / ".env").write_text("API_TOKEN=s3cr3t-value-123\nDEBUG=1\n")
    (top / "config" / "local.yaml").write_text("db: postgres://u:pw-0123456789@db/x\n")
    return top


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside", "goes up"),
        ("config/../../x", "goes up"),
        ("", "empty"),
        ("with space", "characters"),
        ("glob*", "characters"),
        (".git/config", "inside .git/"),
        (".case/active", "inside .case/"),
    ],
)
def test_names_outside_the_repository_or_not_plain_are_refused(name: str, why: str) -> None:
    with pytest.raises(InvalidInputError, match=why):
        check_include_name(name)


def test_files_are_read_from_the_main_checkout(world: FakeWorld) -> None:
    checkout(world)
    files = read_includes(world.workspace, world.repo, [".env", "./config/local.yaml", ".env"])
    assert files == {
        ".env": b"API_TOKEN=s3cr3t-value-123\nDEBUG=1\n",
        "config/local.yaml": b"db: postgres://u:pw-0123456789@db/x\n",
    }
    values = redaction_values(files)
    assert "s3cr3t-value-123" in values
    assert "API_TOKEN=s3cr3t-value-123" in values
    assert "DEBUG=1" not in values, "a line shorter than 8 bytes would redact half the log"


def test_a_symlink_anywhere_on_the_way_a_missing_file_or_a_folder_is_refused(world: FakeWorld, tmp_path: Path) -> None:
    top = checkout(world)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("not the repository's\n")
    os.symlink(outside / "secret", top / "leak")
    os.symlink(outside, top / "linked")
    os.mkfifo(top / "fifo")
    for name, why in [
        ("leak", "symbolic link"),
        ("linked/secret", "not a plain folder"),
        ("missing.env", "no such file"),
        ("config", "not a regular file"),
        ("fifo", "not a regular file"),
    ]:
        with pytest.raises(InvalidInputError, match=why):
            read_includes(world.workspace, world.repo, [name])


def test_a_refused_include_stops_the_plan_before_anything_is_made(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path, include=["../etc/passwd"])
    try:
        with pytest.raises(InvalidInputError, match="goes up"):
            world.service.plan(RunRequest(task=world.new_task(), network="none"), host_environ={})
        assert world.store.list_runs() == []
        assert world.repo.calls == []
    finally:
        world.close()


def test_included_files_make_the_plan_and_its_redactions(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path, include=[".env"])
    try:
        checkout(world)
        plan = world.service.plan(RunRequest(task=world.new_task(), network="none"), host_environ={})
        assert plan.includes == {".env": b"API_TOKEN=s3cr3t-value-123\nDEBUG=1\n"}
        assert "s3cr3t-value-123" in plan.redact
        assert plan.pool is False
    finally:
        world.close()

"""Task files: case's format byte for byte, atomic replacement, and the `.md` Progress Log."""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.adapters import safe_io
from launcher.adapters.safe_io import atomic_write
from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.adapters.taskfiles import (
    COPY_READ_MAX,
    MD_READ_MAX,
    ExternalChangeError,
    TaskFiles,
    render_task_json,
)
from launcher.core.tasks import RepoRef, TaskService
from launcher.errors import IllegalTransitionError, InvalidInputError, StateStoreError
from launcher.settings import Layout

REPO = RepoRef(name="demo", path=None)


@pytest.fixture
def tasks(tmp_path: Path) -> Iterator[TaskService]:
    layout = Layout(tmp_path / "case")
    store = SqliteCoordinator(layout.state_db)
    yield TaskService(store, TaskFiles(layout.tasks_dir, layout.locks_dir, store), actor="tester")
    store.close()


def temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or p.name.endswith(".tmp"))


def no_space(*_args: object, **_kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# -- format ------------------------------------------------------------------------------------


def test_files_are_written_in_cases_format(tasks: TaskService) -> None:
    task = tasks.create(REPO, "Réparer la redirection « login »", body="Steps:\n\n1. open\n2. fix\n")
    json_path, md_path = tasks.files.json_path(task), tasks.files.md_path(task)
    assert json_path == json_path.parent / f"{task.id}.task.json"
    assert json_path.parent.name == "active"
    assert md_path == json_path.with_name(f"{task.id}.md")
    data = json_path.read_bytes()
    # case: json.dump(data, f, indent=2) + "\n", UTF-8 kept as is.
    assert data == (json.dumps(task.doc, indent=2, ensure_ascii=False) + "\n").encode()
    assert data == render_task_json(tasks.get(task.id).doc)
    doc = json.loads(data)
    assert doc["id"] == task.id
    assert doc["status"] == "active"
    assert set(doc) >= {"id", "status", "created", "repo", "agents", "tested", "manualTested", "prUrl", "prNumber"}
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# Réparer la redirection « login »\n")
    assert "1. open\n2. fix" in md
    assert "## Progress Log" in md
    assert "Task created (status active)." in md
    assert temp_files(json_path.parent) == []


# -- atomic replacement ------------------------------------------------------------------------


@pytest.mark.parametrize("failing", ["fsync", "replace", "chmod"])
def test_a_failed_write_leaves_the_old_files_intact_and_no_temp_file(
    tasks: TaskService, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    task = tasks.create(REPO, "Disk fills up")
    json_path, md_path = tasks.files.json_path(task), tasks.files.md_path(task)
    json_before, md_before = json_path.read_bytes(), md_path.read_bytes()

    with monkeypatch.context() as patched:
        patched.setattr(safe_io.os, failing, no_space)
        with pytest.raises((OSError, StateStoreError)) as caught:
            tasks.set_status(task.id, "implementing", reason="start")
    assert "No space left on device" in str(caught.value)

    assert json_path.read_bytes() == json_before
    assert md_path.read_bytes() == md_before
    assert temp_files(json_path.parent) == []
    # The coordinator is the truth (its commit came first); a re-sync brings the file level.
    assert tasks.get(task.id).status.value == "implementing"
    tasks.sync_files(task.id)
    assert json.loads(json_path.read_bytes())["status"] == "implementing"


def test_atomic_write_replaces_whole_files_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.task.json"
    atomic_write(target, b'{"v": 1}\n')
    with monkeypatch.context() as patched:
        patched.setattr(safe_io.os, "fsync", no_space)
        with pytest.raises(OSError, match="No space left"):
            atomic_write(target, b'{"v": 2, "padding": "' + b"x" * 100_000 + b'"}\n')
    assert target.read_bytes() == b'{"v": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.task.json"]
    atomic_write(target, b'{"v": 3}\n', mode=0o640)
    assert target.read_bytes() == b'{"v": 3}\n'
    assert target.stat().st_mode & 0o777 == 0o640


def test_many_writes_leave_no_temp_files(tasks: TaskService) -> None:
    created = [tasks.create(REPO, f"task {n}") for n in range(5)]
    for task in created:
        for target in ["implementing", "verifying", "implementing"]:
            tasks.set_status(task.id, target)
        tasks.sync_files(task.id)
    folder = tasks.files.json_path(created[0]).parent
    assert temp_files(folder) == []
    assert len(list(folder.glob("*.task.json"))) == 5
    assert len(list(folder.glob("*.md"))) == 5


# -- Progress Log ------------------------------------------------------------------------------


def test_each_transition_is_appended_to_the_progress_log(tasks: TaskService) -> None:
    task = tasks.create(REPO, "Logged work", body="The body stays.")
    md_path = tasks.files.md_path(task)
    walk = [("implementing", "picked up"), ("verifying", None), ("implementing", "tests fail"), ("verifying", "ok")]
    previous = md_path.read_text(encoding="utf-8")
    source = "active"
    for target, reason in walk:
        tasks.set_status(task.id, target, reason=reason)
        text = md_path.read_text(encoding="utf-8")
        kept = previous.rstrip("\n")
        assert text.startswith(kept), "the log is only ever appended to"
        added = text[len(kept) :]
        expected = f"Status {source} → {target}" + (f": {reason}" if reason else "")
        assert re.fullmatch(rf"\n\n### tester — \S+\n\n{re.escape(expected)}\n\n", added), added
        previous, source = text, target
    assert previous.count("### ") == 1 + len(walk)
    assert "The body stays." in previous
    # A refused move writes nothing.
    with pytest.raises(IllegalTransitionError):
        tasks.set_status(task.id, "merged")
    assert md_path.read_text(encoding="utf-8") == previous


def test_a_missing_md_gets_a_progress_log_on_the_next_transition(tasks: TaskService) -> None:
    task = tasks.create(REPO, "Lost notes")
    md_path = tasks.files.md_path(task)
    md_path.unlink()
    tasks.set_status(task.id, "implementing")
    text = md_path.read_text(encoding="utf-8")
    assert text.startswith("# Lost notes\n")
    assert "## Progress Log" in text
    assert "Status active → implementing" in text


# -- hand edits --------------------------------------------------------------------------------


def test_a_hand_edited_task_file_is_never_overwritten_silently(tasks: TaskService) -> None:
    task = tasks.create(REPO, "Edited by hand")
    json_path = tasks.files.json_path(task)
    edited = json_path.read_bytes().replace(b'"tested": false', b'"tested": true')
    json_path.write_bytes(edited)
    with pytest.raises(ExternalChangeError) as caught:
        tasks.sync_files(task.id)
    assert str(json_path) in caught.value.message
    assert json_path.read_bytes() == edited


# -- reading the description -------------------------------------------------------------------


def test_read_md_is_capped_and_says_nothing_of_what_it_cannot_read_unless_strict(
    tasks: TaskService, tmp_path: Path
) -> None:
    files = tasks.files
    task = tasks.create(REPO, "Describe it", body="words\n")
    md = files.md_path(task)
    assert files.read_md(task) == files.read_md(task, strict=True) == md.read_text(encoding="utf-8")

    md.write_bytes(b"x" * (MD_READ_MAX + 1))
    assert files.read_md(task) is None, "over the pull request's cap: a pull request without it"
    assert files.read_md(task, max_bytes=MD_READ_MAX + 1) == "x" * (MD_READ_MAX + 1)
    with pytest.raises(safe_io.OverCapError):
        files.read_md(task, strict=True)

    md.unlink()
    assert files.read_md(task) is None
    assert files.read_md(task, strict=True) is None, "no description is not an error"

    elsewhere = tmp_path / "elsewhere.md"
    elsewhere.write_text("not the task's\n")
    md.symlink_to(elsewhere)
    assert files.read_md(task) is None
    with pytest.raises(OSError, match="symbolic link"):
        files.read_md(task, strict=True)

    md.unlink()
    md.mkdir()
    assert files.read_md(task) is None
    with pytest.raises(OSError, match="not a regular file"):
        files.read_md(task, strict=True)


def test_a_runs_copies_of_its_task_files_never_follow_a_symlink(tasks: TaskService, tmp_path: Path) -> None:
    task = tasks.create(REPO, "Copy me", body="the brief\n")
    files = tasks.files
    task_json, task_md = files.read_copies(task)
    assert task_json == files.json_path(task).read_bytes()
    assert task_md is not None
    assert b"the brief" in task_md

    # A repository's .case/tasks/ holds what its commits hold: a .md that points at a host file
    # is refused, naming the file; the host file's bytes are never read into the copy.
    secret = tmp_path / "host-key"
    secret.write_text("PRIVATE KEY\n")
    md = files.md_path(task)
    md.unlink()
    md.symlink_to(secret)
    with pytest.raises(InvalidInputError, match="symbolic link") as refused:
        files.read_copies(task)
    assert str(md) in str(refused.value)
    assert "PRIVATE KEY" not in str(refused.value)

    md.unlink()
    assert files.read_copies(task)[1] is None
    # Not rendered on this machine yet (a task another box created on a shared coordinator):
    # nothing to refuse; the run renders it from the coordinator.
    json_file = files.json_path(task)
    json_file.unlink()
    assert files.read_copies(task) == (None, None)
    files.sync(task.id)
    md.write_bytes(b"x" * (COPY_READ_MAX + 1))
    with pytest.raises(InvalidInputError, match="MiB"):
        files.read_copies(task)

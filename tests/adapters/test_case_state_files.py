"""The host's reads and writes of repo-local .case/ state: no symlink followed, nothing clobbered,
appenders that race for real never interleave."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import pytest

from launcher.adapters.case_state import CaseStateFiles
from launcher.adapters.safe_io import OverCapError, UnsafeFileError

files = CaseStateFiles()


def test_reads_refuse_a_symlink_anywhere_on_the_way(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("host secret")
    (tmp_path / "top" / "real").mkdir(parents=True)
    (tmp_path / "top" / "real" / "f").write_text("ok")
    os.symlink(tmp_path, tmp_path / "top" / "dirlink")
    os.symlink(tmp_path / "secret", tmp_path / "top" / "real" / "filelink")
    top = tmp_path / "top"

    assert files.read(top, ["real", "f"], max_bytes=10) == b"ok"
    assert files.read(top, ["real", "missing"], max_bytes=10) is None
    with pytest.raises(UnsafeFileError):
        files.read(top, ["dirlink", "secret"], max_bytes=100)
    with pytest.raises(UnsafeFileError):
        files.read(top, ["real", "filelink"], max_bytes=100)
    with pytest.raises(OverCapError):
        files.read(top, ["real", "f"], max_bytes=1)
    assert files.list_files(top, ["real"]) == ["f"]  # the link is not a file of it
    with pytest.raises(UnsafeFileError):
        files.list_files(top, ["dirlink"])


def test_writes_never_go_through_a_link_and_write_new_never_clobbers(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    top = tmp_path / "top"
    top.mkdir()
    os.symlink(outside, top / "link")

    with pytest.raises(UnsafeFileError):
        files.write_new(top, ["link", "x"], b"data", owner=None)
    with pytest.raises(UnsafeFileError):
        files.append(top, ["link", "x"], b"data", owner=None)
    assert list(outside.iterdir()) == []

    assert files.write_new(top, ["a", "b", "new.jsonl"], b"first\n", owner=None) is True
    assert files.write_new(top, ["a", "b", "new.jsonl"], b"second\n", owner=None) is False
    assert (top / "a" / "b" / "new.jsonl").read_bytes() == b"first\n"
    os.symlink(outside / "target", top / "a" / "b" / "planted")
    with pytest.raises(UnsafeFileError):
        files.append(top, ["a", "b", "planted"], b"x", owner=None)
    assert not (outside / "target").exists()
    files.replace(top, ["a", "b", "planted"], b"replaced", owner=None)  # the link itself is replaced
    assert not (top / "a" / "b" / "planted").is_symlink()
    assert not (outside / "target").exists()
    assert [p.name for p in (top / "a" / "b").iterdir() if p.name.startswith(".")] == []


def _append_many(top: str, writer: int, start: multiprocessing.synchronize.Event) -> None:
    start.wait()
    for line in range(200):
        # Long lines: an unlocked O_APPEND writer could still be split by a short write.
        record = json.dumps({"writer": writer, "line": line, "pad": "x" * 3000}) + "\n"
        files.append(Path(top), ["run-log.jsonl"], record.encode(), owner=None)


def test_concurrent_appenders_each_land_whole(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    procs = [context.Process(target=_append_many, args=(str(tmp_path), n, start)) for n in range(8)]
    for proc in procs:
        proc.start()
    start.set()
    for proc in procs:
        proc.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * 8

    lines = [json.loads(line) for line in (tmp_path / "run-log.jsonl").read_text().splitlines()]
    assert len(lines) == 8 * 200
    for writer in range(8):
        assert [r["line"] for r in lines if r["writer"] == writer] == list(range(200))

"""Keeping a run's bundle: streamed, checked as hostile input, never deleted for being too big."""

from __future__ import annotations

import os
import tracemalloc
from pathlib import Path

import pytest

from launcher.adapters.safe_io import OverCapError, UnsafeFileError, copy_untrusted
from launcher.adapters.workspace import keep_bundle
from launcher.core.runlayout import RunPaths
from launcher.errors import BundleOverCapError, NotFoundError

MIB = 1024 * 1024


def layout(tmp_path: Path) -> RunPaths:
    paths = RunPaths.of("t-1.1", tmp_path / "wt", tmp_path / "state")
    paths.out_dir.mkdir(parents=True)
    paths.record.mkdir(parents=True)
    return paths


@pytest.mark.slow
def test_a_big_file_is_copied_in_bounded_memory(tmp_path: Path) -> None:
    """Before issue #15 the whole bundle was read into memory (twice: 1 GB for 500 MB)."""
    source = tmp_path / "big"
    with source.open("wb") as handle:
        for _ in range(64):
            handle.write(os.urandom(MIB))
    target = tmp_path / "copy"
    tracemalloc.start()
    try:
        copied = copy_untrusted(source, target, max_bytes=128 * MIB)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert copied == 64 * MIB
    assert target.read_bytes() == source.read_bytes()
    assert peak < 4 * MIB, f"copying 64 MiB peaked at {peak / MIB:.1f} MiB of Python memory"
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)


def test_over_the_cap_is_refused_and_the_target_left_alone(tmp_path: Path) -> None:
    source, target = tmp_path / "big", tmp_path / "copy"
    source.write_bytes(b"x" * 5000)
    target.write_bytes(b"before")
    with pytest.raises(OverCapError) as caught:
        copy_untrusted(source, target, max_bytes=4096)
    assert caught.value.size == 5000
    assert target.read_bytes() == b"before"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("kind", ["symlink", "hardlink", "fifo", "folder"])
def test_what_is_not_one_regular_file_is_refused(tmp_path: Path, kind: str) -> None:
    real, source = tmp_path / "real", tmp_path / "source"
    real.write_bytes(b"x")
    if kind == "symlink":
        source.symlink_to(real)
    elif kind == "hardlink":
        os.link(real, source)
    elif kind == "fifo":
        os.mkfifo(source)
    else:
        source.mkdir()
    with pytest.raises(UnsafeFileError):
        copy_untrusted(source, tmp_path / "copy", max_bytes=MIB)


def test_a_runs_bundle_over_the_cap_is_moved_into_its_record_and_made_the_hosts(tmp_path: Path) -> None:
    paths = layout(tmp_path)
    paths.bundle.write_bytes(b"b" * 5000)
    os.chmod(paths.bundle, 0o666)
    with pytest.raises(BundleOverCapError) as caught:
        keep_bundle(paths, max_bytes=4096)
    assert caught.value.kept == paths.harvested_bundle
    assert not paths.bundle.exists()
    assert paths.harvested_bundle.read_bytes() == b"b" * 5000
    assert paths.harvested_bundle.stat().st_mode & 0o777 == 0o644, "no longer writable by the run"
    # Found again (a settle repeated, `launcher import`), still over the cap until it is raised.
    with pytest.raises(BundleOverCapError):
        keep_bundle(paths, max_bytes=4096)
    assert keep_bundle(paths, max_bytes=8192) == paths.harvested_bundle


def test_an_imported_bundle_is_copied_beside_the_kept_one(tmp_path: Path) -> None:
    paths = layout(tmp_path)
    paths.harvested_bundle.write_bytes(b"kept")
    given = tmp_path / "mine.bundle"
    given.write_bytes(b"given")
    copied = keep_bundle(paths, max_bytes=MIB, source=given)
    assert copied == paths.record / "import.bundle"
    assert copied.read_bytes() == b"given"
    assert paths.harvested_bundle.read_bytes() == b"kept"
    with pytest.raises(NotFoundError):
        keep_bundle(paths, max_bytes=MIB, source=tmp_path / "missing.bundle")

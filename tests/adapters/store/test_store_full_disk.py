"""A full disk under the SQLite store is a StateStoreError (exit 7) that says so, not a traceback."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.errors import ExitCode, StateStoreError
from launcher.models import NewTask


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "tiny"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(folder)], capture_output=True, check=False
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_full_disk_is_a_state_store_error_naming_the_cause(tiny_disk: Path) -> None:
    store = SqliteCoordinator(tiny_disk / "state.db")
    try:
        fd = os.open(tiny_disk / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b"x" * 4096)
        except OSError:
            pass  # the disk is full
        finally:
            os.close(fd)
        new = NewTask(prefix="demo", slug="s", title="t", repo="demo", doc={"body": "y" * 200_000})

        def fill() -> None:
            for _ in range(50):  # 10 MB of documents: more than the disk has left
                store.create_task(new)

        with pytest.raises(StateStoreError, match="the disk under it is full") as raised:
            fill()
        assert raised.value.exit_code == ExitCode.STATE_STORE
    finally:
        store.close()

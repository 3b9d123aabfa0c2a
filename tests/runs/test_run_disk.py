"""A run's disk is bounded: a filling run is stopped before the disk fills; the others finish.

On 1679cc1 nothing watched a run's folders (host bind mounts): one run filled the disk, the
filling run was recorded `exited 0` and the next run died on the full disk. Here the case root
is a small tmpfs of its own, so "the disk" is one this test can fill without touching the host's.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from runkit import Case, make_repo, repo_git

from launcher.errors import ExitCode

pytestmark = [pytest.mark.docker, pytest.mark.slow]

DISK_MB = 240
# 20 MB/s, in 1 MB files: a writer the watcher (every 0.2 s, 4 MB at most between looks) can stop.
FILLER = "i=0; while [ $i -lt 1000 ]; do i=$((i+1)); head -c 1048576 /dev/zero > fill-$i; sleep 0.05; done"
# Writes a little for a few seconds (outliving the filler's stop), then commits.
STEADY = (
    "i=0; while [ $i -lt 30 ]; do i=$((i+1)); head -c 65536 /dev/urandom > steady-$i; sleep 0.2; done; "
    'git add -A && git commit -qm "$CASE_RUN_ID"'
)


@pytest.fixture
def small_disk(tmp_path: Path, launcher_roots: list[Path]) -> Iterator[Path]:
    """A case root on a tmpfs of DISK_MB megabytes."""
    folder = tmp_path / "small-disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_MB}m,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): {mounted.stderr.decode().strip()}")
    root = folder / "case"
    root.mkdir()
    launcher_roots.append(root.resolve())
    try:
        yield root
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


class FreeSpace(threading.Thread):
    """The least free space the disk had while the runs ran, looked at every few milliseconds."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.least, self.done = path, None, threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.005):
            info = os.statvfs(self.path)
            free = info.f_bavail * info.f_frsize
            self.least = free if self.least is None else min(self.least, free)


def _race(case: Case, repo: Path) -> dict[str, dict[str, object]]:
    filler = case.create_task(repo, "Fill the disk")
    steady = [case.create_task(repo, f"Steady {n}") for n in range(2)]
    procs = {
        task: case.popen("run", task, "--network", "none", "--json", "--", "sh", "-c", agent, stdout=subprocess.PIPE)
        for task, agent in [(filler, FILLER), *((t, STEADY) for t in steady)]
    }
    records = {}
    for task, proc in procs.items():
        out, _ = proc.communicate(timeout=300)
        record = json.loads(out)
        record["exit"] = proc.returncode
        records["filler" if task == filler else task] = record
    return records


@pytest.mark.parametrize(
    ("config", "bound"),
    [
        pytest.param("disk = 62914560\ndisk_reserve = 0\n", "disk", id="the-runs-own-budget"),
        pytest.param("disk_reserve = 104857600\n", "reserve", id="the-disks-reserve"),
    ],
)
def test_a_filling_run_is_stopped_before_the_disk_fills_and_the_others_finish(
    small_disk: Path, tmp_path: Path, config: str, bound: str
) -> None:
    case = Case(small_disk)
    repo = make_repo(tmp_path / "repo")
    case.ok("init")
    (small_disk / "launcher.toml").write_text(f"[run]\n{config}disk_check = 0.2\n")
    watch = FreeSpace(small_disk)
    watch.start()
    try:
        records = _race(case, repo)
    finally:
        watch.done.set()
        watch.join()
        case.kill_strays()

    filler = records.pop("filler")
    assert filler["state"] == "exceeded", filler["details"]
    assert filler["exit"] == ExitCode.RUN_EXCEEDED
    exceeded = filler["details"]["exceeded"]  # type: ignore[index]
    assert exceeded["bound"] == bound
    for record in records.values():
        assert (record["state"], record["exit"]) == ("exited", 0), record["details"]
        assert len(record["details"]["harvest"]["commits"]) == 1  # type: ignore[index]
    assert watch.least is not None
    assert watch.least > 0, "the disk never filled"


def test_a_run_is_not_started_on_a_disk_at_its_reserve(small_disk: Path, tmp_path: Path) -> None:
    case = Case(small_disk)
    repo = make_repo(tmp_path / "repo")
    case.ok("init")
    (small_disk / "launcher.toml").write_text(f"[run]\ndisk_reserve = {DISK_MB * 1024 * 1024}\n")
    task = case.create_task(repo, "No room")

    result = case.cli("run", task, "--network", "none", "--", "true")

    assert result.exit_code == ExitCode.STATE_STORE, result.stderr
    assert "less than [run] disk_reserve" in result.stderr
    assert case.runs() == []


def test_gc_prunes_the_records_of_old_runs_and_keeps_their_branches(case: Case, git_repo: Path) -> None:
    task = case.create_task(git_repo, "Leave a record")
    result = case.cli(
        "run", task, "--network", "none", "--json", "--", "sh", "-c", "echo hi > f && git add f && git commit -qm f"
    )
    run = json.loads(result.stdout)
    record = case.root / ".launcher" / "runs" / run["id"]
    assert (record / "run.log").exists()

    kept = json.loads(case.ok("gc", "--older-than", "1d", "--json").stdout)
    assert [a for a in kept["actions"] if a["kind"] == "prune-record"] == []

    report = json.loads(case.ok("gc", "--max-records", "0", "--json").stdout)
    assert [a["target"] for a in report["actions"] if a["kind"] == "prune-record"] == [str(record)]
    assert not record.exists()
    assert case.run_record(run["id"])["details"]["pruned"] is True
    assert len(run["details"]["harvest"]["commits"]) == 1
    assert repo_git(git_repo, "log", "-1", "--format=%s", run["branch"]).strip() == "f", "the branch stays"

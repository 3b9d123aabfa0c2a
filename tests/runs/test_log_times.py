"""`launcher logs -t` and `--since`: when each line was written, kept beside the byte-exact log.

The agent prints a line, waits (inside its container) for a file only `launcher exec` writes,
then prints another, so the moment between the two is known to the test.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from runkit import Case, make_repo, wait_for

from launcher.core.units import parse_since
from launcher.errors import InvalidInputError

pytestmark = pytest.mark.docker

AGENT = "echo one; while [ ! -f go.txt ]; do sleep 0.1; done; printf 'two\\nthree-without-newline'"


def iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def test_timestamps_and_since_split_the_log_where_it_was_written(case: Case, tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    task = case.create_task(repo, "Times")
    agent = case.popen("run", task, "--network", "none", "--", "sh", "-c", AGENT)

    def running() -> str | None:
        runs = [r for r in case.runs(live_only=True) if r["task_id"] == task and r["state"] == "running"]
        return str(runs[0]["id"]) if runs else None

    run_id = wait_for(running, timeout=120, what="the run running")
    wait_for(lambda: "one" in case.ok("logs", run_id).stdout, timeout=60, what="the first line")
    between = time.time()
    assert case.cli("exec", run_id, "--", "touch", "go.txt").exit_code == 0
    assert agent.wait(timeout=120) == 0

    plain = case.ok("logs", run_id).stdout
    stamped = case.ok("logs", "-t", run_id).stdout.splitlines()
    assert [line.split(" ", 1)[1].strip() for line in stamped] == ["one", "two", "three-without-newline"]
    times = [datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")).timestamp() for line in stamped]
    assert times[0] <= between + 0.001 < times[1] + 0.001
    assert times[1] <= times[2]
    assert plain == "one\ntwo\nthree-without-newline", "the log itself stays the agent's bytes exactly"

    since = case.ok("logs", "--since", iso(between), run_id).stdout
    assert since == "two\nthree-without-newline\n"
    assert case.ok("logs", "--since", "1h", run_id).stdout.splitlines() == ["one", "two", "three-without-newline"]
    assert case.ok("logs", "-t", "--tail", "1", run_id).stdout.rstrip().endswith("three-without-newline")
    rows = [json.loads(line) for line in case.ok("logs", "--json", "-t", run_id).stdout.splitlines()]
    assert [r["line"] for r in rows] == ["one", "two", "three-without-newline"]
    assert all(r["run"] == run_id and r["at"].endswith("Z") for r in rows)
    both = case.ok("logs", "-t", run_id, run_id).stdout.splitlines()
    assert all(line.startswith(f"{run_id} | ") for line in both)

    egress = case.cli("logs", "-t", "--egress", run_id)
    assert egress.exit_code == 2
    bad = case.cli("logs", "--since", "yesterday", run_id)
    assert bad.exit_code == 6
    assert "ISO 8601" in bad.stderr


def test_since_reads_durations_and_iso_times() -> None:
    now = 1_800_000_000.0
    assert parse_since("90s", now) == now - 90
    assert parse_since("2h", now) == now - 7200
    assert parse_since("2027-01-15T08:00:00Z", now) == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert parse_since("2027-01-15T08:00:00", now) == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    assert parse_since("2027-01-15T09:00:00+01:00", now) == datetime(2027, 1, 15, 8, tzinfo=UTC).timestamp()
    with pytest.raises(InvalidInputError):
        parse_since("soon", now)

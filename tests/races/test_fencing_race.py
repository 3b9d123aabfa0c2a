"""A run whose claim is taken over while it lives is superseded when it comes back: real processes,
real Docker and git, the coordinator on SQLite or on the session's PostgreSQL server.

Job A (`launcher run`) starts its agent, then its launcher is frozen with SIGSTOP past its claim's
lease (a paused box, a long stall: the container goes on). Job B takes the expired claim over and
runs the task to its end; then a third claimer holds the task. A is let go (SIGCONT): its agent's
work is harvested onto A's own branch and its record kept, but it settles ``superseded`` (exit 19),
its task changes are not applied, the newer attempt's record is untouched, and its release leaves
the newer holder's lease alone. Fast, fake-driven versions of each rule: tests/core/test_fencing_rules.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import pytest
from helpers import repo_git, wait_for
from pg import PgServer, pg_server

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import Case, agent_image, launcher_roots

from launcher.adapters.store import open_coordinator, sqlite_url

__all__ = ["agent_image", "launcher_roots", "pg_server"]
pytestmark = [pytest.mark.docker, pytest.mark.slow]

SUPERSEDED = 19
LEASE_S = 3.0  # [run] claim_lease: the shipped minute would make the test wait for it
NEXT_HOLDER = "next-box:4242:1:run"


def agent(tag: str, *, wait: float = 0) -> list[str]:
    """An agent that asks for task changes in its task copy (prUrl, status), then commits ``<tag>.txt``."""
    script = (
        (f"sleep {wait}; " if wait else "")
        + "python3 - \"$CASE_ROOT/tasks/active/$CASE_TASK_ID.task.json\" <<'PY'\n"
        + "import json, sys\n"
        + "doc = json.load(open(sys.argv[1]))\n"
        + f'doc["prUrl"] = "https://forge.example/pr/{tag}"\n'
        + 'doc["status"] = "implementing"\n'
        + "json.dump(doc, open(sys.argv[1], 'w'))\n"
        + "PY\n"
        + f"echo {tag} > {tag}.txt && git add {tag}.txt && git commit -qm {tag}"
    )
    return ["sh", "-c", script]


class FencedCase(Case):
    """The case root on a given coordinator, with short claims."""

    def __init__(self, root: Path, state_url: str) -> None:
        super().__init__(root)
        self.state_url = state_url
        (root / "launcher.toml").write_text(f"[run]\nclaim_lease = {LEASE_S}\n")

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "launcher", "--root", str(self.root), "--state-url", self.state_url, *args]


@pytest.fixture(params=["sqlite", "postgres"])
def fenced(request: pytest.FixtureRequest, launcher_roots: list[Path]) -> Iterator[FencedCase]:
    root = launcher_roots[0]
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = sqlite_url(root / ".launcher" / "state.db")
        else:
            server: PgServer = request.getfixturevalue("pg_server")
            url = stack.enter_context(server.database())
        driver = FencedCase(root, url)
        try:
            yield driver
        finally:
            for proc in driver.procs:
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGCONT)  # a frozen launcher is let go before it is killed
            driver.kill_strays()


def freeze_between_writes(case: FencedCase, proc: subprocess.Popen[bytes], task_id: str) -> None:
    """SIGSTOP ``proc`` at a moment it holds no transaction open (else B would wait on its lock)."""
    probe = ThreadPoolExecutor(max_workers=1)
    try:
        for _ in range(20):
            os.kill(proc.pid, signal.SIGSTOP)

            def write() -> None:
                with open_coordinator(case.state_url) as store:
                    store.renew_lease(task_id, "probe: renews nothing", LEASE_S)

            done = probe.submit(write)
            try:
                done.result(timeout=3)
                return
            except FutureTimeout:
                os.kill(proc.pid, signal.SIGCONT)  # it held the write lock: let it finish, try again
                done.result(timeout=60)
        pytest.fail("could not freeze the launcher between two of its transactions")
    finally:
        probe.shutdown(wait=True)


def test_a_run_whose_claim_was_taken_over_while_frozen_settles_superseded(fenced: FencedCase, git_repo: Path) -> None:
    case = fenced
    task = case.create_task(git_repo, "Fenced")
    stale = case.popen("run", task, "--", *agent("stale", wait=4), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stale_run = case.wait_running(task)
    freeze_between_writes(case, stale, task)

    # Nothing renews A's claim now: once it has run out (on the coordinator's clock), B takes it over.
    def expired() -> bool:
        with open_coordinator(case.state_url) as store:
            expires = store.get_task(task).lease_expires
        return expires is None or expires < time.time()

    wait_for(expired, timeout=LEASE_S * 10, what="the frozen launcher's claim to run out")
    newer = case.cli("run", task, "--", *agent("newer"))
    assert newer.exit_code == 0, newer.stdout + newer.stderr
    records = {r["id"]: r for r in case.runs() if r["task_id"] == task}
    (newer_run,) = [rid for rid in records if rid != stale_run]
    newer_record = records[newer_run]
    assert (newer_record["state"], newer_record["attempt"], newer_record["details"]["claim"]["fence"]) == (
        "exited",
        2,
        2,
    )
    # A third job holds the task when A comes back: A's release must not free it.
    with open_coordinator(case.state_url) as store:
        holder = store.claim_task(task, NEXT_HOLDER, 600)
    assert holder.claims == 3

    os.kill(stale.pid, signal.SIGCONT)
    _out, err = stale.communicate(timeout=180)

    text = err.decode(errors="replace")
    assert stale.returncode == SUPERSEDED, text
    assert f"run {stale_run} superseded" in text, text
    assert f"superseded: claim #3 (held by {NEXT_HOLDER}) took task {task} over" in text, text
    record = case.run_record(stale_run)
    assert record["state"] == "superseded"
    details = record["details"]
    assert details["claim"]["fence"] == 1
    assert (details["superseded"]["fence"], details["superseded"]["current"]) == (1, 3)
    assert details["superseded"]["holder"] == NEXT_HOLDER
    # Its work is kept: harvested onto its own branch, which the newer attempt never touches.
    assert [c["subject"] for c in details["harvest"]["commits"]] == ["stale"]
    assert repo_git(git_repo, "show", f"{record['branch']}:stale.txt").strip() == "stale"
    assert repo_git(git_repo, "show", f"{newer_record['branch']}:newer.txt").strip() == "newer"
    assert record["branch"] != newer_record["branch"]
    # Its task changes are not the task's; the newer attempt's are.
    assert details["task_changes"]["not_applied"] == ["prUrl", "status:implementing"]
    assert details["task_changes"]["applied_status"] is None
    with open_coordinator(case.state_url) as store:
        now = store.get_task(task)
        history = store.history(task)
    assert (now.status.value, now.doc["prUrl"]) == ("implementing", "https://forge.example/pr/newer")
    assert [t.actor for t in history if t.to_status.value == "implementing"] == [f"run:{newer_run}"]
    # The newer holder's lease stands, and the newer attempt's record is exactly as it was.
    assert (now.lease_owner, now.claims) == (NEXT_HOLDER, 3)
    assert case.run_record(newer_run) == newer_record
    assert json.loads(case.ok("ps", "--all", "--json", "--filter", "state=superseded").stdout)[0]["id"] == stale_run
    assert case.containers() == []

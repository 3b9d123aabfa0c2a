"""A watching batch stops on SIGINT, SIGTERM and SIGHUP, even when it inherited SIGINT ignored.

Scripts start batches as background jobs, and a non-interactive shell starts those with SIGINT
ignored (a CI script's `… &`); a CI runner cancelling the job sends SIGTERM. On 4d4200b the
batch went on watching after `kill -INT` from such a job: it only ever stopped on SIGKILL.
"""

from __future__ import annotations

import signal
import subprocess
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import Bench

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_watching_batch_stops_on_a_signal_it_inherited_ignored(bench: Bench, signum: signal.Signals) -> None:
    watcher = subprocess.Popen(
        bench.argv("batch", "--watch", "--poll", "0.1", "--json"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=bench.env(None),
        preexec_fn=_ignore_sigint,
    )
    bench.procs.append(watcher)
    task = bench.create_task("Run while watched", bench.agent_command(0))["id"]
    bench.wait_for(
        lambda: [r["state"] for r in bench.runs_by_task().get(task, [])] == ["exited"],
        timeout=120,
        what="the watching batch to run the task",
        interval=0.2,
    )

    watcher.send_signal(signum)
    ended = bench.finish(watcher, timeout=30)

    assert ended.exit_code == 130, ended.stderr[-3000:]

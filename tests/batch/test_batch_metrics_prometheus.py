"""`launcher batch --watch --metrics-port`: scraped by a real Prometheus server, read through its API.

Debian's ``prometheus`` binary, started by the test on loopback with a storage directory of its
own and a config scraping the batch every second; the batch picks its own port (``0``) and says
which. The test queues tasks and waits, asking Prometheus's HTTP API (never the batch directly),
until the finished-runs counter reaches the number of tasks and the queue depth is 0; then
the histograms and lease counters are checked there too. Both processes are stopped in finally.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from conftest import Bench

pytestmark = [pytest.mark.docker, pytest.mark.slow]

N_TASKS = 3
NO_PROMETHEUS = "this machine lacks prometheus (Debian package prometheus)"


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metrics_url(stderr: Path) -> str | None:
    """The URL the batch printed first (``{"metrics": {...}}`` with --json), once it has."""
    for line in stderr.read_text().splitlines():
        if line.startswith('{"metrics"'):
            return str(json.loads(line)["metrics"]["url"])
    return None


class Prometheus:
    def __init__(self, tmp: Path, target: str) -> None:
        self.port = free_loopback_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = tmp / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n"
            "  - job_name: launcher-batch\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 900ms\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        (tmp / "tsdb").mkdir()
        self.log = tmp / "prometheus.log"
        self.proc = subprocess.Popen(
            [
                "prometheus",
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("w"),
        )

    def query(self, promql: str) -> list[dict[str, Any]] | None:
        """The instant vector of ``promql``; None while Prometheus is not answering yet."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body = json.load(response)
        except OSError:
            if self.proc.poll() is not None:
                pytest.fail(f"prometheus exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            return None
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        if not result:
            return None
        return float(result[0]["value"][1])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def test_prometheus_scrapes_a_watching_batch(bench: Bench, tmp_path: Path) -> None:
    if shutil.which("prometheus") is None:
        pytest.skip(NO_PROMETHEUS)
    stderr = tmp_path / "batch.stderr"
    # A short lease: the heartbeat renews every lease/3 = 1s, so a run of a few seconds renews.
    watcher = subprocess.Popen(
        bench.argv("batch", "--watch", "-j", "2", "--poll", "0.2", "--lease", "3", "--metrics-port", "0", "--json"),
        stdout=subprocess.PIPE,
        stderr=stderr.open("w"),
        text=True,
        env=bench.env(),
    )
    bench.procs.append(watcher)
    prometheus: Prometheus | None = None
    try:

        def printed_url() -> str | None:
            if watcher.poll() is not None:
                pytest.fail(f"the batch exited {watcher.returncode}:\n{stderr.read_text()[-3000:]}")
            return metrics_url(stderr)

        url = bench.wait_for(printed_url, timeout=60, what="the batch to print its metrics URL")
        assert isinstance(url, str)
        target = urllib.parse.urlsplit(url).netloc
        assert target.startswith("127.0.0.1:"), url  # loopback unless --metrics-host says otherwise
        prometheus = Prometheus(tmp_path, target)
        p = prometheus
        bench.wait_for(
            lambda: p.value('up{job="launcher-batch"}') == 1.0, timeout=60, what="prometheus to scrape the batch"
        )
        assert p.value("launcher_queue_depth") == 0.0
        assert p.value('launcher_runs_finished_total{result="exited"}') == 0.0

        tasks = bench.create_tasks([(f"Metrics task {i}", bench.agent_command(i, sleep=3)) for i in range(N_TASKS)])
        assert len(tasks) == N_TASKS

        def all_done() -> bool:
            finished = p.value('sum(launcher_runs_finished_total{result="exited"})')
            return finished == N_TASKS and p.value("launcher_queue_depth") == 0.0

        bench.wait_for(all_done, timeout=240, interval=0.5, what=f"prometheus to see {N_TASKS} runs exited, queue 0")

        assert p.value("launcher_runs_started_total") == N_TASKS
        assert p.value("launcher_live_runs") == 0.0
        assert p.value('launcher_runs{state="exited"}') == N_TASKS
        assert p.value("launcher_launch_latency_seconds_count") == N_TASKS
        assert p.value("launcher_run_duration_seconds_count") == N_TASKS
        # Each agent slept 3s: every run's duration is over that, none in the 1s bucket.
        assert p.value('launcher_run_duration_seconds_bucket{le="1.0"}') == 0.0
        assert (p.value("launcher_run_duration_seconds_sum") or 0) >= 3 * N_TASKS
        assert (p.value('launcher_lease_renewals_total{outcome="renewed"}') or 0) >= 1
        assert p.value('launcher_lease_renewals_total{outcome="lost"}') == 0.0
        assert p.value("launcher_lease_expiries_total") == 0.0
        assert p.value("launcher_egress_denials_total") == 0.0
        assert p.value("launcher_batch_workers") == 2.0
        assert p.value("launcher_batch_busy_workers") == 0.0
        assert p.value("launcher_coordinator_up") == 1.0
        assert watcher.poll() is None, stderr.read_text()[-3000:]
    finally:
        if prometheus is not None:
            prometheus.stop()
        if watcher.poll() is None:
            watcher.send_signal(signal.SIGINT)
        try:
            watcher.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.communicate(timeout=30)
    events = [json.loads(line)["event"] for line in stderr.read_text().splitlines() if line.startswith('{"event"')]
    assert [e["state"] for e in events if e["kind"] == "finished"] == ["exited"] * N_TASKS, events

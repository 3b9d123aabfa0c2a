"""The test cluster from Python: scripts/cluster.sh's boxes, coordinator and forge, for tests.

A ``Cluster`` is one cluster name (``CLUSTER_NAME``): ``up(n)`` starts it and reads what the
script prints (``NAME=value`` lines), ``down()`` removes everything labelled with that name.
Boxes are numbered from 1. Everything a box does goes through ``cluster.sh box I -- …`` (so
through ``docker exec``): on a box, ``launcher`` has the box's case root, the shared coordinator
and the forge credential (scripts/cluster/launcher-wrapper.sh).

The coordinator is read with psql inside its container (``sql``, ``sql_json``): the tests judge
what happened from the coordinator's own history (``run_events.at`` is the database's clock),
never from a box's clock.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import shlex
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from helpers import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "cluster.sh"
UP_TIMEOUT_S = 1500  # a first build of the box image installs Debian's docker.io and launcher

# A run's states that still hold its task (launcher/core/transitions.py LIVE_RUN_STATES).
LIVE_STATES = frozenset({"created", "preparing", "running", "harvesting"})


class ClusterError(AssertionError):
    """A cluster command failed: what it was, its exit status and what it said."""


def parse_env(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.isupper() and key.replace("_", "").isalnum():
            found[key] = value
    return found


def owner_host(run: dict[str, Any]) -> str | None:
    """The host a run's launcher ran on (the box's hostname: its container name)."""
    owner = run.get("owner")
    if isinstance(owner, str):
        owner = json.loads(owner)
    return owner.get("host") if isinstance(owner, dict) else None


@dataclass
class Batch:
    """A ``launcher batch`` running on a box in the background; its output goes to ``log``.

    The process is ``docker exec``'s on this host: its stdout and stderr are the batch's. Killing
    the box ends it; pausing the box stalls it. ``stop()`` sends SIGTERM to the batch on the box
    (by the pid it wrote), which lets it finish as a batch does on a signal.
    """

    cluster: Cluster
    box: int
    key: str
    log: Path
    proc: subprocess.Popen[bytes]
    _out: IO[bytes] = field(repr=False)

    @property
    def pid_file(self) -> str:
        return f"/run/cluster-batch-{self.key}.pid"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.returncode is not None:
                self._out.close()

    def stop(self, timeout: float = 60) -> int | None:
        """SIGTERM to the batch on its box, then wait; the exec is killed if the box cannot answer."""
        if self.proc.poll() is None:
            self.cluster.box(
                self.box, "sh", "-c", f'kill -TERM "$(cat {self.pid_file})" 2>/dev/null', check=False, timeout=30
            )
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self._out.close()
        return self.proc.returncode


@dataclass
class Cluster:
    name: str
    env: dict[str, str] = field(default_factory=dict)
    images: str | None = None  # CLUSTER_IMAGES: what every box gets (default: the script's)
    box_cpus: float | None = None  # CLUSTER_BOX_CPUS: the CPUs each box may use (default: no limit)
    box_image: str | None = None  # CLUSTER_BOX_IMAGE: the boxes' image as it is (default: built from the checkout)
    logs_dir: Path | None = None
    batches: list[Batch] = field(default_factory=list)

    @classmethod
    def named(cls, prefix: str = "launcher-test-cluster", **kwargs: Any) -> Cluster:
        return cls(name=f"{prefix}-{secrets.token_hex(3)}", **kwargs)

    # -- the script -----------------------------------------------------------------------

    def script_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLUSTER_", "CASE_", "LAUNCHER_", "GIT_"))}
        env["CLUSTER_NAME"] = self.name
        if self.images is not None:
            env["CLUSTER_IMAGES"] = self.images
        if self.box_cpus is not None:
            env["CLUSTER_BOX_CPUS"] = f"{self.box_cpus:g}"
        if self.box_image is not None:
            env["CLUSTER_BOX_IMAGE"] = self.box_image
        return env

    def script(
        self, *args: str, input: str | bytes | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        data = input.encode() if isinstance(input, str) else input
        proc = subprocess.run(
            [str(SCRIPT), *args], input=data, capture_output=True, timeout=timeout, check=False, env=self.script_env()
        )
        done = subprocess.CompletedProcess(
            proc.args, proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace")
        )
        if check and done.returncode != 0:
            shown = " ".join(shlex.quote(a) for a in args)
            raise ClusterError(
                f"cluster.sh {shown[:400]} -> {done.returncode}\n--- stdout:\n{done.stdout[-3000:]}"
                f"\n--- stderr:\n{done.stderr[-3000:]}"
            )
        return done

    def up(self, boxes: int) -> dict[str, str]:
        self.env = parse_env(self.script("up", str(boxes), timeout=UP_TIMEOUT_S).stdout)
        return self.env

    def down(self) -> None:
        for batch in self.batches:
            if batch.running():
                batch.proc.kill()
                batch.proc.wait(timeout=30)
            batch._out.close()
        self.script("down", timeout=300)

    @property
    def box_names(self) -> list[str]:
        return self.env["BOXES"].split()

    def box_name(self, i: int) -> str:
        return self.box_names[i - 1]

    def box_number(self, host: str) -> int:
        return self.box_names.index(host) + 1

    # -- boxes ----------------------------------------------------------------------------

    def box(
        self, i: int, *cmd: str, input: str | bytes | None = None, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``cmd`` on box ``i`` (stdin from ``input``); its exit status is the result's."""
        return self.script("box", str(i), "--", *cmd, input=input, timeout=timeout, check=check)

    def sh(self, i: int, script: str, *, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.box(i, "sh", "-c", script, timeout=timeout, check=check)

    def launcher(self, i: int, *args: str, timeout: float = 300) -> Any:
        """``launcher ARGS --json`` on box ``i``, its stdout parsed."""
        return json.loads(self.box(i, "launcher", *args, "--json", timeout=timeout).stdout)

    def batch(self, i: int, *args: str) -> Batch:
        """``launcher batch ARGS`` started on box ``i`` in the background (see Batch)."""
        key = secrets.token_hex(4)
        folder = self.logs_dir or Path(self.env.get("STATE_DIR") or "/tmp")
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / f"batch-box{i}-{key}.log"
        out = log.open("wb")
        inner = f"echo $$ > /run/cluster-batch-{key}.pid && exec launcher batch " + " ".join(
            shlex.quote(a) for a in args
        )
        proc = subprocess.Popen(
            ["docker", "exec", self.box_name(i), "sh", "-c", inner],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        made = Batch(cluster=self, box=i, key=key, log=log, proc=proc, _out=out)
        self.batches.append(made)
        return made

    def kill(self, i: int) -> None:
        self.script("kill", str(i))

    def restart(self, i: int) -> None:
        self.script("restart", str(i))

    def pause(self, i: int) -> None:
        self.script("pause", str(i))

    def unpause(self, i: int) -> None:
        self.script("unpause", str(i))

    def cut(self, i: int) -> None:
        self.script("cut", str(i))

    def heal(self, i: int) -> None:
        self.script("heal", str(i))

    def restart_db(self) -> None:
        self.script("restart-db")

    def skew(self, i: int, seconds: int) -> None:
        """Launchers started on box ``i`` from now on see their wall clock ``seconds`` off."""
        self.script("skew", str(i), str(seconds))

    def box_state(self, i: int) -> tuple[str, list[str]]:
        """The box's container state (running, paused, exited, …) and the networks it is on."""
        proc = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Status}} {{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
             self.box_name(i)],
            capture_output=True, text=True, timeout=60, check=True,
        )  # fmt: skip
        state, *networks = proc.stdout.split()
        return state, networks

    def restore(self) -> None:
        """Every box as ``up`` left it: batches stopped, thawed, running, on both networks, no skew."""
        for i in range(1, len(self.box_names) + 1):
            state, networks = self.box_state(i)
            if state == "paused":
                self.unpause(i)
            elif state != "running":
                self.restart(i)
            if self.env["COORD_NETWORK"] not in networks:
                self.heal(i)
            self.skew(i, 0)
        # Now that every box answers: a batch still running gets its SIGTERM.
        for batch in self.batches:
            batch.stop()
        self.batches.clear()

    # -- tasks ----------------------------------------------------------------------------

    def queue_tasks(
        self,
        count: int,
        *,
        box: int = 1,
        command: str | None = None,
        title: str = "Cluster task",
        repo: str | None = None,
        parallel: int = 4,
    ) -> list[str]:
        """``count`` tasks queued on the demo repository from box ``box``; their IDs, in order.

        ``command`` is a shell script the agent runs (``sh -c``); ``{n}`` in it is the task's
        number in this call. The default writes ``out-{n}.txt`` naming the run and commits it.
        """
        repo = repo or self.env["DEMO_REPO_URL"]
        command = command or (
            'echo "task {n} by $CASE_RUN_ID" > out-{n}.txt && git add out-{n}.txt && git commit -q -m "task {n}"'
        )
        script = ["set -u", "d=$(mktemp -d)"]
        for n in range(1, count + 1):
            argv = [
                "launcher", "task", "create", "--repo", repo, "--title", f"{title} {n}", "--queue", "--json",
                "--", "sh", "-c", command.replace("{n}", str(n)),
            ]  # fmt: skip
            line = " ".join(shlex.quote(a) for a in argv) + f' >"$d/{n}.json" 2>"$d/{n}.err" || echo {n} >>"$d/failed"'
            # The first alone (it clones the repository into the clone cache), then a few at a time.
            script.append(line if n == 1 else line + " &")
            if n == 1 or (n - 1) % parallel == 0 or n == count:
                script.append("wait")
        script.append('if [ -e "$d/failed" ]; then cat "$d"/*.err >&2; exit 1; fi')
        script.append('for f in "$d"/*.json; do cat "$f"; echo; done; rm -rf "$d"')
        out = self.box(box, "sh", "-s", input="\n".join(script) + "\n", timeout=600).stdout
        decoder, tasks, pos = json.JSONDecoder(), [], 0
        text = out.strip()
        while pos < len(text):
            value, end = decoder.raw_decode(text, pos)
            tasks.append(value)
            pos = end
            while pos < len(text) and text[pos].isspace():
                pos += 1
        by_title = {t["title"]: t["id"] for t in tasks}
        assert len(by_title) == count, f"queued {len(by_title)} of {count} tasks: {out[-2000:]}"
        return [by_title[f"{title} {n}"] for n in range(1, count + 1)]

    # -- the coordinator ------------------------------------------------------------------

    def sql(self, query: str) -> list[list[str]]:
        """``query`` with psql in the coordinator's container: rows of tab-separated text."""
        out = self.script("sql", query, timeout=120).stdout
        return [line.split("\t") for line in out.splitlines() if line]

    def sql_json(self, query: str) -> list[dict[str, Any]]:
        """``query``'s rows as dicts (through json_agg: types as PostgreSQL's JSON gives them)."""
        out = self.script("sql", f"SELECT coalesce(json_agg(q), '[]'::json) FROM ({query}) q", timeout=120).stdout
        rows: list[dict[str, Any]] = json.loads(out.strip() or "[]")
        return rows

    def db_now(self) -> datetime:
        (row,) = self.sql("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US')")
        return datetime.fromisoformat(row[0])

    def runs(self, task_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows of ``runs`` (``details`` and ``owner`` parsed), oldest first."""
        where = _in("task_id", task_ids)
        rows = self.sql_json(
            "SELECT id, seq, task_id, attempt, state, owner, branch, exit_code, "
            "created_at, started_at, ended_at, details FROM runs" + where + " ORDER BY seq"
        )
        for row in rows:
            for key in ("owner", "details"):
                if isinstance(row.get(key), str):
                    row[key] = json.loads(row[key])
        return rows

    def events(self, task_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """Rows of ``run_events`` with their run's task, in the order they were written."""
        where = _in("r.task_id", task_ids)
        return self.sql_json(
            "SELECT e.seq, e.run_id, r.task_id, e.from_state, e.to_state, "
            "e.at AT TIME ZONE 'UTC' AS at, e.detail FROM run_events e JOIN runs r ON r.id = e.run_id"
            + where
            + " ORDER BY e.seq"
        )

    def tasks(self, task_ids: Iterable[str] | None = None) -> list[dict[str, Any]]:
        where = _in("id", task_ids)
        return self.sql_json(
            "SELECT id, status, queued, lease_owner, lease_expires, claims FROM tasks" + where + " ORDER BY id"
        )

    def wait_all_settled(self, task_ids: list[str], *, timeout: float, interval: float = 2.0) -> list[dict[str, Any]]:
        """Until every task has run and ended (no live run, none queued): the runs then."""
        wanted = set(task_ids)

        def settled() -> list[dict[str, Any]] | None:
            tasks = self.tasks(task_ids)
            if any(t["queued"] for t in tasks):
                return None
            runs = self.runs(task_ids)
            if {r["task_id"] for r in runs} != wanted or any(r["state"] in LIVE_STATES for r in runs):
                return None
            return runs

        try:
            return wait_for(settled, timeout=timeout, what=f"{len(task_ids)} tasks to be run", interval=interval)
        except pytest.fail.Exception as exc:
            pytest.fail(f"{exc}\n{self.report(task_ids)}")

    def report(self, task_ids: Iterable[str] | None = None) -> str:
        """What the coordinator and the batches say, for a failure's message."""
        lines = ["--- runs:"]
        try:
            for r in self.runs(task_ids):
                lines.append(f"{r['id']} {r['task_id']} {r['state']} exit={r['exit_code']} host={owner_host(r)}")
            lines.append("--- tasks:")
            lines += [str(t) for t in self.tasks(task_ids)]
        except ClusterError as exc:
            lines.append(f"(coordinator unreadable: {exc})")
        for batch in self.batches:
            lines.append(f"--- batch on box {batch.box} ({'running' if batch.running() else batch.proc.returncode}):")
            lines.append(batch.output()[-3000:])
        return "\n".join(lines)

    # -- the forge ------------------------------------------------------------------------

    def forge_git(self, *args: str, repo: str | None = None) -> str:
        name = repo or self.env["DEMO_REPO"]
        proc = subprocess.run(
            ["docker", "exec", self.env["FORGE_CONTAINER"], "git", "-C", f"/srv/forge/{name}.git", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if proc.returncode != 0:
            raise ClusterError(f"forge: git {' '.join(args)}: {proc.stderr}")
        return proc.stdout

    def forge_refs(self, prefix: str = "refs/heads/", *, repo: str | None = None) -> dict[str, str]:
        out = self.forge_git("for-each-ref", "--format=%(refname) %(objectname)", prefix, repo=repo)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def forge_branches(self, *, repo: str | None = None) -> dict[str, str]:
        """Branch name -> commit, on the forge."""
        return {ref.removeprefix("refs/heads/"): sha for ref, sha in self.forge_refs(repo=repo).items()}

    def forge_show(self, rev: str, path: str, *, repo: str | None = None) -> str:
        return self.forge_git("show", f"{rev}:{path}", repo=repo)


def _in(column: str, values: Iterable[str] | None) -> str:
    if values is None:
        return ""
    quoted = ", ".join("'" + v.replace("'", "''") + "'" for v in values)
    return f" WHERE {column} IN ({quoted})" if quoted else " WHERE FALSE"


def running_intervals(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, datetime, datetime | None]]]:
    """task -> [(run, entered running, left running or None)], on the coordinator's clock."""
    found: dict[str, list[tuple[str, datetime, datetime | None]]] = {}
    open_: dict[str, tuple[str, datetime]] = {}
    for e in events:
        at = datetime.fromisoformat(e["at"])
        if e["to_state"] == "running":
            open_[e["run_id"]] = (e["task_id"], at)
        elif e["from_state"] == "running" and e["run_id"] in open_:
            task, start = open_.pop(e["run_id"])
            found.setdefault(task, []).append((e["run_id"], start, at))
    for run, (task, start) in open_.items():
        found.setdefault(task, []).append((run, start, None))
    return found


def overlaps(intervals: dict[str, list[tuple[str, datetime, datetime | None]]]) -> list[str]:
    """Pairs of one task's attempts that were running at the same time."""
    bad = []
    for task, spans in intervals.items():
        ordered = sorted(spans, key=lambda s: s[1])
        for (run_a, _, end_a), (run_b, start_b, _) in itertools.pairwise(ordered):
            if end_a is None or start_b < end_a:
                bad.append(f"{task}: {run_a} (until {end_a}) and {run_b} (from {start_b})")
    return bad

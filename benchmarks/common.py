"""Shared pieces: figures and targets, the run context, subprocesses, generated repositories, cleanup.

Everything the suite creates is registered with the `Context` the moment it exists, and
`Context.cleanup()` removes it: its own processes (by their Popen handles), every container (and run network) it
labelled (`launcher.benchmark=1` plus this session's id) or that launcher started for one of its
temporary case roots (`launcher.root=<root>`), and its temporary folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from benchmarks.repo_shapes import make_repo as make_repo

IMAGE = "launcher/agent-base:latest"
BENCH_LABEL = "launcher.benchmark"
SESSION_LABEL = "launcher.benchmark.session"
SAMPLE_LABEL = "launcher.benchmark.sample"
T0_MARKER = "LAUNCHER_BENCH_T0="
# The agent's first instruction: a high-resolution timestamp on the host's clock (containers
# share the kernel's CLOCK_REALTIME), printed so that both launcher and bare docker show it.
FIRST_INSTRUCTION = f"echo {T0_MARKER}$(date +%s.%N)"
AGENT_COMMAND = ["sh", "-c", FIRST_INSTRUCTION]
PROCESS_TIMEOUT_S = 900.0
# Variables that would point launcher somewhere other than the temporary case root.
# PYTHONDONTWRITEBYTECODE too: an installed launcher has its byte code (pip writes it); without
# it every launch would compile ~144 modules again (0.16-0.18 s here, docs/performance.md).
_SCRUBBED_ENV = ("CASE_ROOT", "LAUNCHER_STATE_URL", "LAUNCHER_TEST_FAULTS", "PYTHONDONTWRITEBYTECODE")


def _compile_launcher(python: Path) -> None:
    """Write launcher's byte code before anything is timed, as an install does."""
    import launcher

    subprocess.run(
        [str(python), "-m", "compileall", "-q", str(Path(launcher.__file__).parent)],
        check=True,
        env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
    )


class BenchmarkError(RuntimeError):
    """A benchmark could not measure what it set out to (a run failed, a figure is missing)."""


# -- figures --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """ratio_max: cost ratio against the bare baseline at most `value`; max/min: the launcher
    median itself at most/at least `value`; equals: every launcher sample equal to `value`."""

    kind: Literal["ratio_max", "max", "min", "equals"]
    value: float

    def describe(self, unit: str) -> str:
        if self.kind == "ratio_max":
            return f"<= {self.value:g}x"
        if self.kind == "max":
            return f"<= {fmt_value(self.value, unit)}"
        if self.kind == "min":
            return f">= {fmt_value(self.value, unit)}"
        return f"= {fmt_value(self.value, unit)}"


@dataclass
class Figure:
    """One line of the table: launcher's samples against a bare baseline's, measured in the same run."""

    benchmark: str
    name: str
    unit: Literal["s", "/s", "/min", "count"]
    launcher: list[float]
    baseline: list[float] = field(default_factory=list)
    baseline_label: str = ""
    higher_is_better: bool = False
    target: Target | None = None
    note: str = ""

    @property
    def launcher_median(self) -> float | None:
        return median(self.launcher)

    @property
    def baseline_median(self) -> float | None:
        return median(self.baseline)

    @property
    def ratio(self) -> float | None:
        """Cost relative to the baseline: >1 means launcher is slower, whatever the unit."""
        lm, bm = self.launcher_median, self.baseline_median
        if lm is None or bm is None or lm == 0 or bm == 0:
            return None
        return bm / lm if self.higher_is_better else lm / bm

    @property
    def met(self) -> bool | None:
        t, lm = self.target, self.launcher_median
        if t is None or lm is None:
            return None
        if t.kind == "ratio_max":
            return None if self.ratio is None else self.ratio <= t.value
        if t.kind == "max":
            return lm <= t.value
        if t.kind == "min":
            return lm >= t.value
        return all(v == t.value for v in self.launcher)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": self.benchmark,
            "figure": self.name,
            "unit": self.unit,
            "launcher": {"median": self.launcher_median, "samples": self.launcher},
            "baseline": {"label": self.baseline_label, "median": self.baseline_median, "samples": self.baseline},
            "ratio": self.ratio,
            "higher_is_better": self.higher_is_better,
            "target": None if self.target is None else {"kind": self.target.kind, "value": self.target.value},
            "target_text": None if self.target is None else self.target.describe(self.unit),
            "met": self.met,
            "note": self.note,
        }


@dataclass
class BenchResult:
    """What one benchmark hands back: table rows, raw data for the JSON file, extra text to print."""

    name: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    reports: list[str] = field(default_factory=list)


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "/s":
        return f"{value:,.0f} /s"
    if unit == "/min":
        return f"{value:,.1f} /min"
    return f"{value:g}"


def render_table(rows: list[list[str]], headers: list[str], right: set[int] | None = None) -> str:
    right = right or set()
    widths = [max(len(str(c)) for c in col) for col in zip(headers, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            (c.rjust(w) if i in right else c.ljust(w)) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def figures_table(figures: list[Figure]) -> str:
    rows = []
    for f in figures:
        met = f.met
        rows.append(
            [
                f.name,
                fmt_value(f.launcher_median, f.unit),
                fmt_value(f.baseline_median, f.unit),
                "-" if f.ratio is None else f"{f.ratio:.2f}x",
                "-" if f.target is None else f.target.describe(f.unit),
                "-" if met is None else ("met" if met else "NOT MET"),
                str(len(f.launcher)),
            ]
        )
    headers = ["figure", "launcher (median)", "baseline (median)", "ratio", "target", "result", "n"]
    return render_table(rows, headers, right={1, 2, 3, 6})


# -- the run context ---------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool
    repeats: int | None
    only: list[str]
    json_out: Path
    tmp_dir: Path | None
    sizes: tuple[int, ...] = ()
    repos: tuple[Path, ...] = ()


class Context:
    """Where a benchmark session keeps its temporary files, and what it must remove at the end."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.session = uuid.uuid4().hex[:12]
        base = tempfile.mkdtemp(prefix=f"launcher-bench-{self.session}-", dir=options.tmp_dir)
        self.tmp = Path(base).resolve()
        self._roots: list[Path] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._lock = threading.Lock()
        self.python = Path(sys.executable)
        sibling = self.python.with_name("launcher")
        self.launcher: list[str] = [str(sibling)] if sibling.exists() else [str(self.python), "-m", "launcher"]
        self.env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        _compile_launcher(self.python)
        self._repos: dict[int, Path] = {}
        self._serial = 0

    # -- the launch service (LAUNCHER_SERVICE=on), for the samples that measure it --

    @property
    def service_runtime(self) -> Path:
        return self.tmp / "runtime"

    def served_env(self) -> dict[str, str]:
        """launcher's environment with the launch service on, in this session's own folder."""
        self.service_runtime.mkdir(mode=0o700, exist_ok=True)
        return {
            **self.env,
            "LAUNCHER_SERVICE": "verbose",
            "XDG_RUNTIME_DIR": str(self.service_runtime),
            "LAUNCHER_SERVICE_IDLE": "900",
        }

    def start_service(self) -> None:
        """Untimed: the first served command runs itself and starts the service; wait until one is served."""
        deadline = time.monotonic() + 120
        while (
            "served by the launch service" not in self.run([*self.launcher, "--version"], env=self.served_env()).stderr
        ):
            if time.monotonic() > deadline:
                raise BenchmarkError("the launch service did not start within 120 s")
            time.sleep(0.2)

    def _stop_services(self) -> None:
        """SIGTERM to the launch services of this session's folder (and no one else's)."""
        marker = str(self.service_runtime).encode()
        for proc_dir in Path("/proc").iterdir():
            if not proc_dir.name.isdigit():
                continue
            try:
                argv = (proc_dir / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"launcher.service" in argv and any(marker in a for a in argv):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(int(proc_dir.name), signal.SIGTERM)

    def repeats(self, full: int, quick: int) -> int:
        if self.options.repeats:
            return self.options.repeats
        return quick if self.options.quick else full

    # -- labels and processes --

    def bare_labels(self, sample: str | None = None) -> list[str]:
        labels = ["--label", f"{BENCH_LABEL}=1", "--label", f"{SESSION_LABEL}={self.session}"]
        if sample:
            labels += ["--label", f"{SAMPLE_LABEL}={sample}"]
        return labels

    def next_id(self, prefix: str) -> str:
        with self._lock:
            self._serial += 1
            return f"{prefix}-{self._serial}"

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
        kwargs.setdefault("env", self.env)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        proc = subprocess.Popen(argv, **kwargs)
        with self._lock:
            self._procs.append(proc)
        return proc

    def finished(self, proc: subprocess.Popen[Any]) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._procs.remove(proc)

    def run(
        self, argv: list[str], *, timeout: float = PROCESS_TIMEOUT_S, check: bool = True, **kwargs: Any
    ) -> Completed:
        """Run to completion, registered for cleanup while it lives; stdout and stderr captured."""
        proc = self.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            proc.wait()
            self.finished(proc)
            raise BenchmarkError(f"{' '.join(argv[:6])}… did not finish in {timeout:.0f} s") from exc
        # Interrupted: the process stays registered, and cleanup() stops it politely.
        self.finished(proc)
        result = Completed(argv, proc.returncode, out, err)
        if check and proc.returncode != 0:
            raise BenchmarkError(f"{' '.join(argv[:6])}… exited {proc.returncode}: {err.strip()[-800:]}")
        return result

    # -- case roots, repositories, tasks --

    def case_root(self, name: str) -> Path:
        root = self.tmp / "roots" / name
        root.mkdir(parents=True)
        self._roots.append(root)
        self.run([*self.launcher, "--root", str(root), "init"])
        return root

    def repo(self, files: int) -> Path:
        if files not in self._repos:
            self._repos[files] = make_repo(self.tmp / "repos" / f"files-{files}", files)
        return self._repos[files]

    def clone(self, source: Path) -> Path:
        """A clone of the local repository `source` in the session's folder (see `clone_repo`)."""
        name = source.resolve().name or "repo"
        return clone_repo(source, self.tmp / "repos" / self.next_id(f"clone-{name}"))

    def create_tasks(self, root: Path, repo: Path, title: str, count: int, command: list[str]) -> list[str]:
        """Tasks created through launcher's Python API (setup, not measured)."""
        from launcher.cli.app_context import Application

        app = Application(str(root), None)
        try:
            ref = app.repositories.resolve(str(repo))
            ids = []
            for i in range(count):
                label = title if count == 1 else f"{title} {i + 1}"
                ids.append(app.tasks.create(ref, label, command=command).id)
            return ids
        finally:
            app.close()

    # -- cleanup --

    def cleanup(self) -> list[str]:
        """Stop our processes, remove our containers and temporary folders. Returns what went wrong."""
        problems: list[str] = []
        self._stop_services()
        with self._lock:
            procs = [p for p in self._procs if p.poll() is None]
            self._procs.clear()
        for proc in procs:  # launcher handles SIGINT: it kills its container and records `cancelled`
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 15
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        filters = [f"label={SESSION_LABEL}={self.session}"] + [f"label=launcher.root={r}" for r in self._roots]
        ids: set[str] = set()
        for flt in filters:
            try:
                out = subprocess.run(
                    ["docker", "ps", "-aq", "--no-trunc", "--filter", flt],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                ).stdout
                ids.update(out.split())
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"listing containers ({flt}): {exc}")
        if ids:
            proc_rm = subprocess.run(
                ["docker", "rm", "-f", *sorted(ids)], capture_output=True, text=True, timeout=300, check=False
            )
            if proc_rm.returncode != 0:
                problems.append(f"docker rm -f: {proc_rm.stderr.strip()}")
        # Runs remove their own networks; an interrupted run (Ctrl-C of the benchmark) may not.
        for root in self._roots:
            try:
                networks = subprocess.run(
                    ["docker", "network", "ls", "-q", "--filter", f"label=launcher.root={root}"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=True,
                ).stdout.split()
            except (OSError, subprocess.SubprocessError) as exc:
                problems.append(f"listing networks of {root}: {exc}")
                continue
            if networks:
                removed = subprocess.run(
                    ["docker", "network", "rm", *networks], capture_output=True, text=True, timeout=300, check=False
                )
                if removed.returncode != 0:
                    problems.append(f"docker network rm: {removed.stderr.strip()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.tmp.exists():
            problems.append(f"could not remove {self.tmp}")
        return problems


@dataclass
class Completed:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str


def parse_t0(stdout: str) -> float:
    for line in stdout.splitlines():
        if line.startswith(T0_MARKER):
            return float(line[len(T0_MARKER) :].strip())
    raise BenchmarkError(f"the agent's timestamp ({T0_MARKER}…) is missing from its output: {stdout[-300:]!r}")


def wait_teardowns(root: Path, timeout: float = 300.0) -> float:
    """Wait for the root's runs being taken apart after their result (launcher/core/run/
    teardown.py); how long that took. A teardown still going at the deadline fails the benchmark."""
    from launcher.adapters.teardown_locks import TeardownLocks

    started = time.perf_counter()
    still = TeardownLocks(root / ".launcher" / "teardown").wait(timeout)
    if still:
        raise BenchmarkError(f"teardown of {', '.join(still)} still going after {timeout:.0f} s")
    return time.perf_counter() - started


def iso_to_epoch(value: str | None) -> float | None:
    if not value:
        return None
    return datetime.fromisoformat(value).timestamp()


# -- repositories ------------------------------------------------------------------------


def clone_repo(source: Path, dest: Path) -> Path:
    """A private copy of the local repository `source` at its HEAD commit, for the benchmark to work on.

    `git clone --no-hardlinks`: the clone's objects are copies (full history, as the source has
    them), so nothing launcher or the bare floor does can reach the source's files, and no
    alternates (launcher refuses a repository that borrows objects, and a `--shared` clone would
    make both sides read the source's object store). Uncommitted changes of the source are not in it.
    """
    top = subprocess.run(
        ["git", "-C", str(source), "rev-parse", "--show-toplevel"], capture_output=True, text=True, check=False
    )
    if top.returncode != 0:
        raise BenchmarkError(f"--repo {source}: not a git repository ({top.stderr.strip()})")
    toplevel = Path(top.stdout.strip())
    head = subprocess.run(
        ["git", "-C", str(toplevel), "rev-parse", "--verify", "HEAD^{commit}"], capture_output=True, text=True
    )
    if head.returncode != 0:
        raise BenchmarkError(f"--repo {source}: no commit at HEAD")
    dest.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(toplevel), str(dest)], check=True)
    # The source's HEAD, also when it is detached or not the default branch.
    subprocess.run(["git", "-C", str(dest), "reset", "-q", "--hard", head.stdout.strip()], check=True)
    return dest


# -- docker events, for step timestamps seen from outside ------------------------------------


class DockerEvents:
    """Collects container events (create, start, die, destroy) with the engine's nanosecond clock."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events: list[dict[str, Any]] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> DockerEvents:
        self._proc = self.ctx.popen(
            ["docker", "events", "--format", "{{json .}}", "--filter", "type=container"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        time.sleep(0.2)  # let the stream attach before the first container is created
        return self

    def _read(self) -> None:
        assert self._proc is not None
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self.events.append(json.loads(line))

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)  # the last events of the last container
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=10)
            self.ctx.finished(self._proc)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def times(self, **labels: str) -> dict[str, float]:
        """First time of each action for the container carrying all `labels`."""
        found: dict[str, float] = {}
        for event in self.events:
            attrs = event.get("Actor", {}).get("Attributes", {})
            if all(attrs.get(k) == v for k, v in labels.items()):
                action = str(event.get("Action", "")).split(":")[0]
                found.setdefault(action, int(event.get("timeNano", 0)) / 1e9)
        return found


# -- environment -----------------------------------------------------------------------------


def environment(ctx: Context) -> dict[str, Any]:
    def out(argv: list[str]) -> str | None:
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    repo_dir = Path(__file__).resolve().parent.parent
    status = out(["git", "-C", str(repo_dir), "status", "--porcelain", "--untracked-files=no"])
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": list(os.getloadavg()),
        "git": out(["git", "--version"]),
        "docker_server": out(["docker", "version", "--format", "{{.Server.Version}}"]),
        "docker_storage_driver": out(["docker", "info", "--format", "{{.Driver}}"]),
        "image": IMAGE,
        "image_id": out(["docker", "image", "inspect", "--format", "{{.Id}}", IMAGE]),
        "launcher_commit": out(["git", "-C", str(repo_dir), "rev-parse", "HEAD"]),
        "launcher_tree_dirty": bool(status),
        "launcher_argv": ctx.launcher,
        "tmp_dir": str(ctx.tmp.parent),
    }


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

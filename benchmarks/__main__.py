"""`python -m benchmarks`: launcher's measured cost, side by side with bare baselines in one run.

See benchmarks/README.md for what each figure measures and how to read the table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

from benchmarks import cli_start, cluster, concurrency, coordinator, harvest, launch
from benchmarks.common import (
    IMAGE,
    BenchmarkError,
    BenchResult,
    Context,
    Figure,
    Options,
    environment,
    figures_table,
    now_iso,
)

BENCHMARKS: dict[str, Callable[[Context], BenchResult]] = {
    "cli": cli_start.run,
    "coordinator": coordinator.run,
    "launch": launch.run,
    "concurrency": concurrency.run,
    "harvest": harvest.run,
    "cluster": cluster.run,
}
NEEDS_DOCKER = {"launch", "concurrency", "harvest", "cluster"}
# Only with --only: builds the cluster-box image and brings up three clusters (minutes).
OPT_IN = {"cluster"}
DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure launcher against bare baselines (git + docker run, plain SQLite, python -c pass) "
        "in one run; print medians, ratios and targets.",
    )
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes (< 2 minutes; for CI)")
    parser.add_argument(
        "--only",
        default="",
        metavar="NAME[,NAME]",
        help=f"run only these benchmarks: {', '.join(BENCHMARKS)} (default: all but {', '.join(sorted(OPT_IN))})",
    )
    parser.add_argument(
        "--repeats", type=int, default=None, metavar="N", help="repeats per figure (default: per benchmark)"
    )
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON, metavar="FILE", help=f"default: {DEFAULT_JSON}")
    parser.add_argument("--tmp-dir", type=Path, default=None, metavar="DIR", help="where temporary repositories go")
    parser.add_argument(
        "--sizes",
        default="",
        metavar="FILES[,FILES]",
        help="generated repository sizes (files) for `launch`, e.g. 50000 (default: 3000,50000; --quick: 3000; "
        "none with --repo unless given)",
    )
    parser.add_argument(
        "--repo",
        action="append",
        type=Path,
        default=[],
        metavar="PATH",
        help="also measure `launch` on this local git repository (repeatable; a clone of its HEAD is used, "
        "the repository itself is not touched); with --repo, generated sizes run only if --sizes names them",
    )
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(n) for n in args.sizes.split(",") if n.strip())
    except ValueError:
        parser.error("--sizes takes whole numbers of files, e.g. 3000,50000")
    if any(n < 1 for n in sizes):
        parser.error("--sizes must be positive")
    only = [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in only if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    for repo in args.repo:
        if not repo.is_dir():
            parser.error(f"--repo {repo}: no such folder")
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return Options(
        quick=args.quick,
        repeats=args.repeats,
        only=only,
        json_out=args.json_out,
        tmp_dir=args.tmp_dir,
        sizes=sizes,
        repos=tuple(args.repo),
    )


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _docker_ready() -> str | None:
    try:
        proc = subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        return f"docker is not usable: {exc}"
    if proc.returncode != 0:
        return f"{IMAGE} is not in the local engine ({proc.stderr.strip()}); build it: launcher image build"
    return None


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    selected = options.only or [name for name in BENCHMARKS if name not in OPT_IN]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    started, started_at = time.perf_counter(), now_iso()
    ctx = Context(options)
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    reports: list[str] = []
    errors: dict[str, str] = {}
    env: dict[str, Any] = {}
    interrupted = False
    try:
        env = environment(ctx)
        docker_problem = _docker_ready() if NEEDS_DOCKER & set(selected) else None
        for name in selected:
            if name in NEEDS_DOCKER and docker_problem:
                errors[name] = docker_problem
                print(f"[{name}] skipped: {docker_problem}", file=sys.stderr)
                continue
            print(f"[{name}] running…", file=sys.stderr, flush=True)
            t = time.perf_counter()
            try:
                result = BENCHMARKS[name](ctx)
            except BenchmarkError as exc:
                errors[name] = str(exc)
                print(f"[{name}] FAILED: {exc}", file=sys.stderr)
                continue
            except Exception as exc:
                errors[name] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
                continue
            figures += result.figures
            details.update(result.details)
            reports += result.reports
            details.setdefault("elapsed_s", {})[name] = round(time.perf_counter() - t, 2)
            print(f"[{name}] done in {time.perf_counter() - t:.1f} s", file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: cleaning up", file=sys.stderr)
    finally:
        cleanup_problems = ctx.cleanup()
        for problem in cleanup_problems:
            print(f"cleanup: {problem}", file=sys.stderr)
    elapsed = time.perf_counter() - started
    if env:
        env["loadavg_at_end"] = list(os.getloadavg())
    print()
    print(figures_table(figures) if figures else "no figures")
    for report in reports:
        print()
        print(report)
    print()
    mode = "quick" if options.quick else "full"
    print(f"{mode} run, {elapsed:.0f} s; ratio = launcher cost / bare cost (>1: launcher slower)")
    if env:
        start_load, end_load = env["loadavg_at_start"][0], env["loadavg_at_end"][0]
        print(f"load average (1 min) {start_load:.1f} at start, {end_load:.1f} at end, on {env['cpus']} CPUs")
    print(f"JSON: {options.json_out}")
    for name, error in errors.items():
        print(f"{name}: ERROR: {error}")
    payload = {
        "schema": 1,
        "started_at": started_at,
        "finished_at": now_iso(),
        "elapsed_s": round(elapsed, 2),
        "mode": mode,
        "options": {
            "quick": options.quick,
            "repeats": options.repeats,
            "only": selected,
            "sizes": list(options.sizes),
            "repos": [str(r) for r in options.repos],
        },
        "environment": env,
        "figures": [f.to_json() for f in figures],
        "details": details,
        "errors": errors,
        "interrupted": interrupted,
        "cleanup_problems": cleanup_problems,
    }
    options.json_out.parent.mkdir(parents=True, exist_ok=True)
    options.json_out.write_text(json.dumps(payload, indent=2) + "\n")
    if interrupted:
        return 130
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())

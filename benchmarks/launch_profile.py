"""Profile one `launcher run` from outside: `python -m benchmarks.launch_profile [--files N]`.

Nothing in launcher is changed or patched. On a generated repository (3,000 files by default)
and a temporary case root, after one untimed warm-up run:

1. `python -X importtime -m launcher … run`: what the launch spends importing.
2. `python -m cProfile -m launcher … run`: where the host process spends its time, grouped
   (imports, Docker API calls, git subprocesses, SQLite) plus launcher's slowest functions.
3. `strace -f -ttt -e trace=execve` (if installed): every program launcher starts, when, and
   for how long, relative to the launch.
4. entry.sh's steps, replayed: `git reset -q --hard`, backdating the files as new as the index, `git
   update-index --refresh` on a `--no-checkout` worktree of the same repository, in a container
   (`docker run --rm`, as entry.sh does them) and on the host; against `git worktree add`
   with checkout on the host (the bare baseline's way).
5. entry.sh inside a real run: `GIT_TRACE_PERFORMANCE=1` handed to the run with launcher's own
   `--secret NAME` (its value a path, /proc/self/fd/2: long enough to be a secret), so the container's git reports
   how long its checkout took; the rest up to the first instruction is backdating and refresh.
"""

from __future__ import annotations

import argparse
import json
import pstats
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    AGENT_COMMAND,
    IMAGE,
    Context,
    Options,
    fmt_value,
    median,
    now_iso,
    parse_t0,
    render_table,
)

DEFAULT_JSON = Path(__file__).resolve().parent / "results" / "profile.json"
ENTRY_REPLAY = (
    # As entry.sh's backdate: only the files as new as the index are backdated and hashed again.
    "set -e; s=$(date +%s.%N); git reset -q --hard; a=$(date +%s.%N); "
    'w=$(stat -c %Y "$(git rev-parse --git-path index)"); '
    'touch -d "@$((w - 1)).999999999" /tmp/second; git ls-files -z > /tmp/paths; '
    "find -files0-from /tmp/paths -maxdepth 0 ! -type d -newer /tmp/second -print0 > /tmp/racy 2>/dev/null || true; "
    'xargs -0 -r touch -c -h -d "@$((w - 2))" -- < /tmp/racy; b=$(date +%s.%N); '
    "if [ -s /tmp/racy ]; then git update-index -q --refresh >/dev/null 2>&1 || true; fi; "
    "c=$(date +%s.%N); echo STEPS $s $a $b $c"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.launch_profile", description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=3_000, help="files in the generated repository")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of the entry.sh replay")
    parser.add_argument("--json-out", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    ctx = Context(Options(quick=True, repeats=None, only=[], json_out=args.json_out, tmp_dir=None))
    report: dict[str, Any] = {"started_at": now_iso(), "files": args.files}
    try:
        repo = ctx.repo(args.files)
        root = ctx.case_root("profile")
        [task] = ctx.create_tasks(root, repo, "profile", 1, AGENT_COMMAND)
        run_argv = ["--root", str(root), "run", task]
        ctx.run([*ctx.launcher, *run_argv])  # warm-up
        report["importtime"] = _importtime(ctx, run_argv)
        report["cprofile"] = _cprofile(ctx, run_argv)
        report["strace"] = _strace(ctx, run_argv) if shutil.which("strace") else None
        report["entry_replay"] = _entry_replay(ctx, repo, args.repeats)
        report["entry_in_run"] = [_entry_in_run(ctx, root, task) for _ in range(args.repeats)]
    finally:
        problems = ctx.cleanup()
        for p in problems:
            print(f"cleanup: {p}", file=sys.stderr)
    _print(report)
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"\nJSON: {args.json_out}")
    return 0


def _importtime(ctx: Context, run_argv: list[str]) -> dict[str, Any]:
    launch = time.time()
    done = ctx.run([str(ctx.python), "-X", "importtime", "-m", "launcher", *run_argv])
    first = parse_t0(done.stdout) - launch
    top: list[tuple[int, str]] = []
    for line in done.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \| (\s*)(\S+)", line)
        if m and not m.group(3):  # a top-level import (no extra indent)
            top.append((int(m.group(2)), m.group(4)))
    top.sort(reverse=True)
    total = sum(c for c, _ in top) / 1e6
    return {
        "first_instruction_s": first,
        "total_import_s": total,
        "top": [{"module": n, "cumulative_s": c / 1e6} for c, n in top[:15]],
        "note": "-X importtime itself slows imports a little",
    }


def _cprofile(ctx: Context, run_argv: list[str]) -> dict[str, Any]:
    out = ctx.tmp / "run.prof"
    ctx.run([str(ctx.python), "-m", "cProfile", "-o", str(out), "-m", "launcher", *run_argv])
    stats = pstats.Stats(str(out))
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = max(ct for (_cc, _nc, _tt, ct, _callers) in raw.values())

    def cumulative(file_part: str, func: str) -> float:
        return max((v[3] for (file, _line, name), v in raw.items() if file_part in file and name == func), default=0.0)

    groups = {
        "imports (importlib _find_and_load)": cumulative("<frozen importlib._bootstrap>", "_find_and_load"),
        "Docker API calls (requests Session.request)": cumulative("requests/sessions.py", "request"),
        "  of which waiting for the container to exit": cumulative("docker/models/containers.py", "wait"),
        "git and other subprocesses (subprocess.run)": cumulative("subprocess.py", "run"),
        "SQLite statements (Connection.execute)": cumulative("~", "<method 'execute' of 'sqlite3.Connection' objects>"),
        "docker client + ping (docker_client)": cumulative("launcher/adapters/docker/client.py", "docker_client"),
        "plan (core.run.plan)": cumulative("launcher/core/run/plan.py", "plan_run"),
        "prepare (core.run.workspace)": cumulative("launcher/core/run/workspace.py", "prepare_workspace"),
        "chown_tree": cumulative("launcher/adapters/workspace.py", "chown_tree"),
        "settle (core.run.settle)": cumulative("launcher/core/run/settle.py", "settle"),
    }
    ours = sorted(
        ((v[3], f"{Path(file).name}:{line} {name}") for (file, line, name), v in raw.items() if "/launcher/" in file),
        reverse=True,
    )
    return {
        "total_s": total,
        "groups_s": groups,
        "launcher_functions": [{"function": n, "cumulative_s": c} for c, n in ours[:20]],
    }


def _strace(ctx: Context, run_argv: list[str]) -> dict[str, Any]:
    out = ctx.tmp / "strace.txt"
    launch = time.time()
    done = ctx.run(["strace", "-f", "-ttt", "-e", "trace=execve,exit_group", "-o", str(out), *ctx.launcher, *run_argv])
    t0 = parse_t0(done.stdout)
    starts: dict[str, tuple[float, str]] = {}
    programs = []
    for line in out.read_text(errors="replace").splitlines():
        m = re.match(r"(\d+)\s+([\d.]+) (execve|exit_group)\((.*)", line)
        if not m or "ENOENT" in line:
            continue
        pid, at, call, rest = m.group(1), float(m.group(2)), m.group(3), m.group(4)
        if call == "execve" and " = 0" in rest:
            args = re.findall(r'"((?:[^"\\]|\\.)*)"', rest.split("], ")[0])
            cmd = " ".join(a if not a.startswith("--git-dir=") else "--git-dir=..." for a in args[1:])
            starts[pid] = (at, cmd[:110])
        elif call == "exit_group" and pid in starts:
            begin, cmd = starts.pop(pid)
            programs.append({"start_s": begin - launch, "duration_s": at - begin, "command": cmd})
    programs.sort(key=lambda p: p["start_s"])
    return {
        "first_instruction_s": t0 - launch,
        "programs": programs,
        "note": "under strace; absolute times are inflated, the order and relative sizes are what matter",
    }


def _entry_replay(ctx: Context, repo: Path, repeats: int) -> dict[str, Any]:
    variants = {"container": [], "container --cpus 1 (launcher's default limit)": ["--cpus", "1"]}
    results: dict[str, list[float]] = {}
    git = ["git", "-C", str(repo)]
    for _ in range(repeats):
        for name, extra in variants.items():
            wt = ctx.tmp / "replay" / ctx.next_id("c")
            ctx.run([*git, "worktree", "add", "-q", "--no-checkout", str(wt), "HEAD"])
            done = ctx.run(
                [
                    *("docker", "run", "--rm", *ctx.bare_labels(), *extra, "--user", "0:0"),
                    *("-e", "GIT_CONFIG_COUNT=1", "-e", "GIT_CONFIG_KEY_0=safe.directory"),
                    *("-e", "GIT_CONFIG_VALUE_0=*", "-v", f"{wt}:/workspace", "-w", "/workspace"),
                    *("-v", f"{repo / '.git'}:{repo / '.git'}", IMAGE, "sh", "-c", ENTRY_REPLAY),
                ]
            )
            s, a, b, c = (float(x) for x in done.stdout.split("STEPS", 1)[1].split())
            for step, value in (("git reset --hard", a - s), ("backdate files", b - a), ("refresh", c - b)):
                results.setdefault(f"{name}: {step}", []).append(value)
            ctx.run([*git, "worktree", "remove", "--force", str(wt)])
        wt = ctx.tmp / "replay" / ctx.next_id("h")
        ctx.run([*git, "worktree", "add", "-q", "--no-checkout", str(wt), "HEAD"])
        start = time.perf_counter()
        ctx.run(["git", "-C", str(wt), "reset", "-q", "--hard"])
        results.setdefault("host: git reset --hard (no-checkout worktree)", []).append(time.perf_counter() - start)
        ctx.run([*git, "worktree", "remove", "--force", str(wt)])
        wt = ctx.tmp / "replay" / ctx.next_id("w")
        start = time.perf_counter()
        ctx.run([*git, "worktree", "add", "-q", str(wt), "HEAD"])
        results.setdefault("host: git worktree add with checkout", []).append(time.perf_counter() - start)
        ctx.run([*git, "worktree", "remove", "--force", str(wt)])
    return {k: {"median_s": median(v), "samples": v} for k, v in results.items()}


def _entry_in_run(ctx: Context, root: Path, task: str) -> dict[str, Any]:
    # git traces to a path as well as to "1"; a path is long enough to pass as a secret (launcher
    # refuses secrets under 8 bytes, which it could not redact) and this one is the run's stderr.
    env = {**ctx.env, "GIT_TRACE_PERFORMANCE": "/proc/self/fd/2"}
    launch = time.time()
    argv = [*ctx.launcher, "--root", str(root), "run", "--secret", "GIT_TRACE_PERFORMANCE", task]
    done = ctx.run(argv, env=env)
    t0 = parse_t0(done.stdout)
    reset = re.search(r"performance: ([\d.]+) s: git command: git reset -q --hard", done.stdout)
    listed = re.search(r"^(\d\d):(\d\d):(\d\d\.\d+) .*git command: git ls-files", done.stdout, re.M)
    if not reset or not listed:
        return {"error": "no git trace in the run's output", "first_instruction_s": t0 - launch}
    h, m, sec = listed.groups()
    listed_tod = int(h) * 3600 + int(m) * 60 + float(sec)  # the container's clock, UTC
    return {
        "first_instruction_s": t0 - launch,
        "checkout_git_reset_s": float(reset.group(1)),
        "backdate_refresh_s": (t0 % 86400) - listed_tod,
    }


def _print(report: dict[str, Any]) -> None:
    imp = report.get("importtime")
    if imp:
        print(f"\n1. imports during `launcher run` (-X importtime): {imp['total_import_s']:.3f} s in total")
        rows = [[t["module"], fmt_value(t["cumulative_s"], "s")] for t in imp["top"][:12]]
        print(render_table(rows, ["top-level import", "cumulative"], right={1}))
    prof = report.get("cprofile")
    if prof:
        print(f"\n2. cProfile of `launcher run` ({prof['total_s']:.3f} s under the profiler)")
        rows = [[k, fmt_value(v, "s")] for k, v in prof["groups_s"].items()]
        print(render_table(rows, ["group", "cumulative"], right={1}))
        rows = [[f["function"], fmt_value(f["cumulative_s"], "s")] for f in prof["launcher_functions"][:14]]
        print(render_table(rows, ["launcher function", "cumulative"], right={1}))
    st = report.get("strace")
    if st:
        print(
            f"\n3. programs started by `launcher run` (strace; first instruction at {st['first_instruction_s']:.3f} s)"
        )
        rows = [[fmt_value(p["start_s"], "s"), fmt_value(p["duration_s"], "s"), p["command"]] for p in st["programs"]]
        print(render_table(rows, ["at", "took", "command"], right={0, 1}))
    rep = report.get("entry_replay")
    if rep:
        print("\n4. entry.sh's checkout, replayed (medians)")
        rows = [[k, fmt_value(v["median_s"], "s")] for k, v in rep.items()]
        print(render_table(rows, ["step", "median"], right={1}))
    runs = [r for r in report.get("entry_in_run") or [] if "error" not in r]
    if runs:
        print("\n5. entry.sh inside real runs (GIT_TRACE_PERFORMANCE; medians)")
        keys = ["first_instruction_s", "checkout_git_reset_s", "backdate_refresh_s"]
        rows = [[k, fmt_value(median([r[k] for r in runs]), "s")] for k in keys]
        print(render_table(rows, ["", "median"], right={1}))


if __name__ == "__main__":
    sys.exit(main())

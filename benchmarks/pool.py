"""Warm pool helpers for the launch benchmark: one slot made before a pooled sample, and cleanup.

A pooled sample is `launcher pool warm --size 1` (untimed: a slot is made ahead of time, that is
the point of a pool), then the same `launcher run` as every other launcher sample, which takes
the slot by itself. `launch.py` checks afterwards that the run's record names the slot.

Cleanup is `launcher pool drain` for the benchmark's own case root, then a sweep of whatever a
failed drain left: containers labelled `launcher.kind=pool` and networks labelled
`launcher.kind=pool-network`, both with `launcher.root=<that root>` (docker ANDs label filters),
never anything else on the engine. `Context.cleanup()` removes what carries the root's label
after that in any case (also after Ctrl-C).
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkError, Context


def warm_one(ctx: Context, root: Path, repo: Path, network: str) -> tuple[str, float]:
    """Make exactly one ready slot for `repo` in `network` mode; its id and how long warming took."""
    started = time.perf_counter()
    warm = ["pool", "warm", "--repo", str(repo), "--size", "1", "--network", network, "--json"]
    done = ctx.run([*ctx.launcher, "--root", str(root), *warm])
    elapsed = time.perf_counter() - started
    try:
        report: dict[str, Any] = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"`pool warm --json` printed no JSON: {done.stdout[-300:]!r}") from exc
    warmed = report.get("warmed") or []
    if report.get("ready_before") != 0 or len(warmed) != 1 or report.get("failed"):
        # A slot left from an earlier sample would be taken instead of this one, or not at all.
        raise BenchmarkError(f"`pool warm --size 1` should make exactly one slot on an empty pool: {report}")
    return str(warmed[0]), elapsed


def drain(ctx: Context, root: Path) -> list[str]:
    """Remove the root's ready slots, then anything labelled as a pool slot of this root. Returns problems."""
    problems: list[str] = []
    try:
        done = ctx.run([*ctx.launcher, "--root", str(root), "pool", "drain", "--json"], timeout=300, check=False)
        if done.returncode != 0:
            problems.append(f"pool drain exited {done.returncode}: {done.stderr.strip()[-400:]}")
        else:
            removed = json.loads(done.stdout).get("removed") or []
            if removed:  # only after a failed sample: every pooled sample takes its slot
                problems.append(f"pool drain removed {len(removed)} ready slot(s) no run took: {removed}")
    except (BenchmarkError, json.JSONDecodeError, AttributeError) as exc:
        problems.append(f"pool drain: {exc}")
    problems += _sweep(root)
    return problems


def _docker(argv: list[str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *argv], capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.SubprocessError) as exc:  # reported like a failed command
        return subprocess.CompletedProcess(["docker", *argv], 1, "", str(exc))


def _sweep(root: Path) -> list[str]:
    """Pool containers and networks of `root` that a drain did not remove (it should have)."""
    problems: list[str] = []
    mine = ["--filter", f"label=launcher.root={root}"]
    listed = _docker(["ps", "-aq", "--no-trunc", *mine, "--filter", "label=launcher.kind=pool"])
    if listed.returncode != 0:
        problems.append(f"listing pool containers: {listed.stderr.strip()}")
    elif containers := listed.stdout.split():
        problems.append(f"pool drain left {len(containers)} slot container(s); removed")
        removed = _docker(["rm", "-f", *containers])
        if removed.returncode != 0:
            problems.append(f"docker rm -f: {removed.stderr.strip()}")
    listed = _docker(["network", "ls", "-q", *mine, "--filter", "label=launcher.kind=pool-network"])
    if listed.returncode != 0:
        problems.append(f"listing pool networks: {listed.stderr.strip()}")
        return problems
    networks = listed.stdout.split()
    if networks:
        problems.append(f"pool drain left {len(networks)} slot network(s); removed")
    for network in networks:
        # The root's egress proxy is still attached: a network with members cannot be removed.
        members = _docker(
            ["network", "inspect", "--format", "{{range $id, $_ := .Containers}}{{$id}} {{end}}", network]
        )
        for member in members.stdout.split():
            _docker(["network", "disconnect", "-f", network, member])
        removed = _docker(["network", "rm", network])
        if removed.returncode != 0:
            problems.append(f"docker network rm {network}: {removed.stderr.strip()}")
    return problems

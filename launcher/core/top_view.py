"""What `launcher top` shows and what its keys do: rows, columns, the last line, the key map.

Pure: run records and what was measured of them (engine stats, the live commit count, the
log's tail) in, rows and decisions out. The reading (engine, files, coordinator) and the
drawing (rich) are the CLI's and the adapters'.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from launcher.core import run_view
from launcher.core.transitions import LIVE_RUN_STATES, RunState
from launcher.models import RunRecord


class Usage(BaseModel):
    """One sample of a container's use, as `docker stats` computes it."""

    cpu_percent: float | None = None  # of one CPU: 200.0 is two CPUs busy
    memory_bytes: int | None = None  # without the page cache, as `docker stats` shows it
    memory_limit: int | None = None


class RunFacts(BaseModel):
    """What was measured of a run beyond its record (each None when it could not be)."""

    usage: Usage | None = None
    commits: int | None = None  # commits so far, of a live run (an ended one's record has them)
    denied: int | None = None  # refusals so far, of a live run (an ended one's record has them)
    last_line: str = ""


class TopRow(BaseModel):
    """One run in `top`: the values (`--json`) its table row is made of."""

    id: str
    task: str
    state: str
    live: bool
    age_seconds: float
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit: int | None
    commits: int | None
    denied: int | None
    last_line: str


def _cpu(sample: Mapping[str, Any]) -> float | None:
    cpu, pre = sample.get("cpu_stats") or {}, sample.get("precpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    before = (pre.get("cpu_usage") or {}).get("total_usage")
    system, system_before = cpu.get("system_cpu_usage"), pre.get("system_cpu_usage")
    if not (
        isinstance(total, int)
        and isinstance(before, int)
        and isinstance(system, int)
        and isinstance(system_before, int)
    ):
        return None
    cpus = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    system_delta = system - system_before
    if system_delta <= 0 or before == 0:
        return None  # the stream's first sample: the one "before" it is zeros
    return max(0.0, (total - before) / system_delta * float(cpus) * 100.0)


def usage_of(sample: Mapping[str, Any]) -> Usage:
    """A stats-stream sample as `docker stats` reads it: CPU from this sample and the one before
    it (the engine puts both in), memory without the inactive page cache (cgroup v1 or v2)."""
    memory = sample.get("memory_stats") or {}
    used = memory.get("usage")
    stats = memory.get("stats") or {}
    if isinstance(used, int):
        for key in ("total_inactive_file", "inactive_file"):
            cache = stats.get(key)
            if isinstance(cache, int) and cache < used:
                used -= cache
                break
    limit = memory.get("limit")
    return Usage(
        cpu_percent=_cpu(sample),
        memory_bytes=used if isinstance(used, int) else None,
        memory_limit=limit if isinstance(limit, int) and limit > 0 else None,
    )


def last_line(data: bytes) -> str:
    """The last line with something on it, as a terminal would leave it (the text after its last
    carriage return), tabs as spaces. Control characters are still in it: the caller shows them
    as text."""
    for line in reversed(data.decode("utf-8", errors="replace").split("\n")):
        shown = next((part for part in reversed(line.split("\r")) if part.strip()), "")
        if shown:
            return shown.expandtabs(4).strip()
    return ""


def denials(lines: Iterable[bytes]) -> int:
    """How many of the egress proxy's decision lines (JSONL) are refusals."""
    count = 0
    for line in lines:
        try:
            decision = json.loads(line)
        except ValueError:
            continue  # a line being written as this reads it
        if isinstance(decision, dict) and decision.get("decision") not in (None, "allow"):
            count += 1
    return count


def rows(runs: Iterable[RunRecord], facts: Mapping[str, RunFacts], now: datetime) -> list[TopRow]:
    made = []
    for run in runs:
        found = facts.get(run.id, RunFacts())
        live = run.state in LIVE_RUN_STATES
        usage = found.usage if live and run.state is RunState.RUNNING else None
        made.append(
            TopRow(
                id=run.id,
                task=run.task_id,
                state=run.state.value,
                live=live,
                age_seconds=round(run_view.duration_seconds(run, now), 3),
                cpu_percent=None if usage is None or usage.cpu_percent is None else round(usage.cpu_percent, 1),
                memory_bytes=None if usage is None else usage.memory_bytes,
                memory_limit=None if usage is None else usage.memory_limit,
                commits=found.commits if live else run_view.commits(run),
                denied=found.denied if live and run_view.denied(run) is None else run_view.denied(run),
                last_line=found.last_line,
            )
        )
    return made


def size_text(count: int) -> str:
    """1.5KiB, 12MiB, 2.0GiB: as `docker stats` writes sizes, at most three figures."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f}{unit}" if unit == "B" or value >= 100 else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


COLUMNS = ("RUN", "TASK", "STATE", "AGE", "CPU", "MEM", "COMMITS", "DENIED", "LAST")
TASK_WIDTH = 32
LAST_MIN = 12  # below this the last line is left out rather than shown as a few letters


def cells(row: TopRow) -> dict[str, str]:
    return {
        "RUN": row.id,
        "TASK": row.task[:TASK_WIDTH],
        "STATE": row.state,
        "AGE": run_view.duration_text(row.age_seconds),
        "CPU": "-" if row.cpu_percent is None else f"{row.cpu_percent:.1f}%",
        "MEM": "-" if row.memory_bytes is None else size_text(row.memory_bytes),
        "COMMITS": _or_dash(row.commits),
        "DENIED": _or_dash(row.denied),
        "LAST": row.last_line,
    }


def plain_table(table_rows: list[TopRow], width: int | None) -> list[list[str]]:
    """Rows of cells for a plain table (no terminal), header first; LAST cut to ``width``."""
    grid = [list(COLUMNS)] + [[cells(r)[c] for c in COLUMNS] for r in table_rows]
    if width is None:
        return grid
    widths = [max(len(line[i]) for line in grid) for i in range(len(COLUMNS) - 1)]
    room = width - sum(widths) - 2 * (len(COLUMNS) - 1)
    if room < LAST_MIN:
        return [line[:-1] for line in grid]
    return [[*line[:-1], line[-1][:room]] for line in grid]


# -- keys -----------------------------------------------------------------------------------

Mode = Literal["table", "log", "diff", "confirm-stop"]
Action = Literal["quit", "stop", "diff", "redraw"]
UP, DOWN, ESCAPE = "up", "down", "escape"
HELP = "↑/↓ or j/k select   l log   d diff   s stop   q quit"


@dataclass(frozen=True)
class TopState:
    selected: str | None = None  # a run ID: the selection follows the run, not a row number
    mode: Mode = "table"
    message: str = ""


def select(state: TopState, shown: list[str]) -> TopState:
    """The selection kept on its run while it is shown, else on the first run."""
    if state.selected in shown:
        return state
    return replace(state, selected=shown[0] if shown else None, mode="table" if not shown else state.mode)


def press(state: TopState, key: str, shown: list[str], live: set[str]) -> tuple[TopState, Action]:
    """What a key does, given the runs shown (in order) and which of them are live."""
    state = select(state, shown)
    if state.mode == "confirm-stop":
        if key in ("y", "Y") and state.selected is not None:
            return replace(state, mode="table", message=f"stopping {state.selected}…"), "stop"
        return replace(state, mode="table", message="not stopped"), "redraw"
    if key in ("q", "Q"):
        return state, "quit"
    if key in (UP, "k", DOWN, "j") and state.selected is not None:
        step = -1 if key in (UP, "k") else 1
        index = max(0, min(len(shown) - 1, shown.index(state.selected) + step))
        return replace(state, selected=shown[index], message=""), "redraw"
    if key == ESCAPE:
        return replace(state, mode="table", message=""), "redraw"
    if state.selected is None:
        return replace(state, message="no run to act on"), "redraw"
    if key == "l":
        return replace(state, mode="table" if state.mode == "log" else "log", message=""), "redraw"
    if key == "d":
        if state.mode == "diff":
            return replace(state, mode="table", message=""), "redraw"
        return replace(state, mode="diff", message=""), "diff"
    if key == "s":
        if state.selected not in live:
            return replace(state, message=f"{state.selected} has already ended"), "redraw"
        return replace(state, mode="confirm-stop", message=f"stop {state.selected}? y to confirm, any other key not"), (
            "redraw"
        )
    return state, "redraw"


def parse_keys(data: bytes) -> list[str]:
    """Keys from what a terminal in cbreak mode sent: arrows as their escape sequences."""
    keys: list[str] = []
    text = data.decode("utf-8", errors="ignore")
    i = 0
    while i < len(text):
        if text.startswith(("\x1b[A", "\x1bOA"), i):
            keys.append(UP)
            i += 3
        elif text.startswith(("\x1b[B", "\x1bOB"), i):
            keys.append(DOWN)
            i += 3
        elif text[i] == "\x1b":
            # Another sequence (other arrows, function keys) is skipped whole; ESC alone goes back.
            end = i + 1
            if text.startswith(("[", "O"), end):
                end += 1
                while end < len(text) and not text[end].isalpha() and text[end] != "~":
                    end += 1
                keys.append("")
                i = end + 1
            else:
                keys.append(ESCAPE)
                i += 1
        else:
            keys.append(text[i])
            i += 1
    return [k for k in keys if k]


def live_diff_note(run_id: str, commits: int | None) -> str:
    so_far = "" if commits is None else f" ({commits} commit{'s' if commits != 1 else ''} so far)"
    return (
        f"{run_id} is still live{so_far}: its commits reach its branch when it ends, and `d` shows "
        "the diff then. Host git never reads a live run's worktree or git dir."
    )

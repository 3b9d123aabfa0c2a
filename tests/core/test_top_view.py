"""`launcher top`'s rows, figures and keys (launcher.core.top_view), and its reader of a live
run's private git dir (launcher.adapters.live_run): no engine, no terminal."""

from __future__ import annotations

import hashlib
import os
import zlib
from datetime import timedelta
from pathlib import Path

from launcher.adapters.live_run import DenialCounter, commits_so_far, tail
from launcher.core import top_view as tv
from launcher.core.transitions import RunState
from launcher.models import RunRecord, utcnow


def record(run_id: str, state: RunState, **details: object) -> RunRecord:
    now = utcnow()
    return RunRecord.model_validate(
        {
            "id": run_id,
            "seq": 1,
            "task_id": f"task-{run_id}",
            "attempt": 1,
            "state": state,
            "owner": None,
            "branch": f"launcher/{run_id}",
            "worktree": "/nowhere",
            "image": None,
            "container_id": "c-" + run_id,
            "created_at": now - timedelta(seconds=75),
            "updated_at": now,
            "ended_at": None if state in (RunState.RUNNING, RunState.CREATED) else now,
            "details": details,
        }
    )


def sample(total: int, before: int, system: int, system_before: int) -> dict[str, object]:
    return {
        "cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": 2},
        "precpu_stats": {"cpu_usage": {"total_usage": before}, "system_cpu_usage": system_before},
        "memory_stats": {"usage": 10_000_000, "limit": 2 << 30, "stats": {"total_inactive_file": 2_000_000}},
    }


def test_usage_is_what_docker_stats_shows() -> None:
    usage = tv.usage_of(sample(total=1_500, before=1_000, system=12_000, system_before=10_000))
    assert usage.cpu_percent == 50.0  # 500 of 2000 system ns, times two CPUs
    assert usage.memory_bytes == 8_000_000  # without the inactive page cache
    assert usage.memory_limit == 2 << 30
    first = tv.usage_of(sample(total=1_500, before=0, system=12_000, system_before=0))
    assert first.cpu_percent is None  # a stream's first sample has nothing before it
    assert tv.usage_of({}).memory_bytes is None


def test_the_last_line_is_what_a_terminal_would_leave() -> None:
    assert tv.last_line(b"one\ntwo\n\n  \n") == "two"
    assert tv.last_line(b"progress 10%\rprogress 90%\r") == "progress 90%"
    assert tv.last_line(b"a\tb") == "a   b"
    assert tv.last_line(b"") == ""
    assert tv.last_line(b"\xff broken") == "\ufffd broken"


def test_denials_count_refusals_and_skip_a_half_written_line() -> None:
    lines = [b'{"decision": "allow"}', b'{"decision": "deny", "host": "x"}', b'{"decision": "deny"', b"[]"]
    assert tv.denials(lines) == 1


def test_rows_take_live_figures_for_live_runs_and_the_record_for_ended_ones() -> None:
    live = record("a-1.1", RunState.RUNNING)
    ended = record("b-1.1", RunState.CANCELLED, egress={"denied_decisions": 3})
    facts = {
        "a-1.1": tv.RunFacts(usage=tv.Usage(cpu_percent=12.345, memory_bytes=3 << 20), commits=2, denied=1),
        "b-1.1": tv.RunFacts(usage=tv.Usage(cpu_percent=99.0), commits=7, denied=9, last_line="bye"),
    }
    a, b = tv.rows([live, ended], facts, utcnow())
    assert (a.cpu_percent, a.memory_bytes, a.commits, a.denied, a.live) == (12.3, 3 << 20, 2, 1, True)
    assert (b.cpu_percent, b.memory_bytes, b.commits, b.denied, b.live) == (None, None, None, 3, False)
    shown = tv.cells(a)
    assert (shown["CPU"], shown["MEM"], shown["AGE"], shown["DENIED"]) == ("12.3%", "3.0MiB", "1m15s", "1")
    assert tv.cells(b)["CPU"] == "-"


def test_the_plain_table_cuts_the_last_line_to_the_width_or_drops_it() -> None:
    row = tv.rows([record("a-1.1", RunState.RUNNING)], {"a-1.1": tv.RunFacts(last_line="x" * 500)}, utcnow())
    wide = tv.plain_table(row, 120)
    assert wide[0][-1] == "LAST"
    assert 12 <= len(wide[1][-1]) < 120
    assert "LAST" not in tv.plain_table(row, 40)[0]
    assert tv.plain_table(row, None)[1][-1] == "x" * 500


def test_sizes_read_as_docker_writes_them() -> None:
    assert [tv.size_text(n) for n in (512, 1536, 150 << 20, 3 << 30)] == ["512B", "1.5KiB", "150MiB", "3.0GiB"]


def test_keys_select_follow_the_run_and_stop_needs_a_confirmation() -> None:
    shown, live = ["a", "b", "c"], {"a", "b"}
    state, action = tv.press(tv.TopState(), "j", shown, live)
    assert (state.selected, action) == ("b", "redraw")
    state, _ = tv.press(state, tv.DOWN, shown, live)
    state, _ = tv.press(state, tv.DOWN, shown, live)
    assert state.selected == "c"  # the bottom stays the bottom
    assert tv.press(state, "s", shown, live)[0].message == "c has already ended"
    state, _ = tv.press(state, "k", shown, live)
    asked, action = tv.press(state, "s", shown, live)
    assert (asked.mode, action) == ("confirm-stop", "redraw")
    assert tv.press(asked, "n", shown, live) == (tv.TopState("b", "table", "not stopped"), "redraw")
    assert tv.press(asked, "y", shown, live)[1] == "stop"
    # The selection stays on its run when rows come and go; on the first when its run is gone.
    assert tv.select(tv.TopState("b"), ["z", "b"]).selected == "b"
    assert tv.select(tv.TopState("b"), ["z"]).selected == "z"
    assert tv.press(state, "l", shown, live)[0].mode == "log"
    assert tv.press(tv.TopState("b", "log"), tv.ESCAPE, shown, live)[0].mode == "table"
    assert tv.press(state, "d", shown, live)[1] == "diff"
    assert tv.press(state, "q", shown, live)[1] == "quit"


def test_terminal_sequences_become_keys() -> None:
    assert tv.parse_keys(b"\x1b[A\x1b[Bj\x1b") == [tv.UP, tv.DOWN, "j", tv.ESCAPE]
    assert tv.parse_keys(b"\x1b[5~q\x1b[Cs") == ["q", "s"]  # page-up and right-arrow mean nothing


# -- the private git dir, read as hostile input --------------------------------------------


def loose(git_dir: Path, body: bytes, kind: bytes = b"commit") -> str:
    raw = kind + b" " + str(len(body)).encode() + b"\0" + body
    sha = hashlib.sha1(raw).hexdigest()  # git's object names
    folder = git_dir / "objects" / sha[:2]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / sha[2:]).write_bytes(zlib.compress(raw))
    return sha


def commit(git_dir: Path, *parents: str, message: str = "work") -> str:
    lines = [b"tree " + b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"]
    lines += [b"parent " + p.encode() for p in parents]
    return loose(git_dir, b"\n".join([*lines, b"author a <a@x> 0 +0000", b"", message.encode()]))


def private_git_dir(tmp_path: Path, head: str, base: str, branch: str = "launcher/t/1") -> Path:
    git_dir = tmp_path / "git"
    (git_dir / "refs" / "heads" / "launcher" / "t").mkdir(parents=True, exist_ok=True)
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{branch}\n")
    (git_dir / "refs" / "heads" / branch).write_text(head + "\n")
    return git_dir


def test_commits_so_far_walk_the_runs_own_loose_commits_down_to_the_base(tmp_path: Path) -> None:
    base = "a" * 40  # the repository's, through the alternates: not loose here
    git_dir = tmp_path / "git"
    one = commit(git_dir, base)
    side = commit(git_dir, base, message="side")
    two = commit(git_dir, one, side, message="merge")
    private_git_dir(tmp_path, two, base)
    assert commits_so_far(git_dir, base) == 3
    private_git_dir(tmp_path, base, base)
    assert commits_so_far(git_dir, base) == 0


def test_commits_so_far_refuse_links_packed_heads_and_foreign_objects(tmp_path: Path) -> None:
    base = "a" * 40
    git_dir = tmp_path / "git"
    head = commit(git_dir, base)
    private_git_dir(tmp_path, "b" * 40, base)
    assert commits_so_far(git_dir, base) is None  # HEAD moved to a commit that is not loose: packed
    private_git_dir(tmp_path, head, base)
    objects = git_dir / "objects" / head[:2]
    outside = tmp_path / "outside"
    objects.rename(outside)
    os.symlink(outside, objects)
    assert commits_so_far(git_dir, base) is None  # a folder that is a link is never followed
    objects.unlink()
    outside.rename(objects)
    (git_dir / "HEAD").unlink()
    os.symlink(tmp_path / "elsewhere", git_dir / "HEAD")
    assert commits_so_far(git_dir, base) is None
    (git_dir / "HEAD").unlink()
    (git_dir / "HEAD").write_text("ref: refs/heads/../../../../etc/passwd\n")
    assert commits_so_far(git_dir, base) is None
    blob = loose(git_dir, b"not a commit", kind=b"blob")
    (git_dir / "HEAD").write_text(blob + "\n")
    assert commits_so_far(git_dir, base) is None
    assert commits_so_far(tmp_path / "absent", base) is None


def test_the_denial_counter_reads_whole_lines_as_the_log_grows(tmp_path: Path) -> None:
    log = tmp_path / "run.jsonl"
    counter = DenialCounter()
    assert counter.read(log) is None
    log.write_bytes(b'{"decision": "deny"}\n{"decision": "al')
    assert counter.read(log) == 1
    with log.open("ab") as handle:
        handle.write(b'low"}\n{"decision": "deny"}\n')
    assert counter.read(log) == 2
    assert tail(log, 10) == log.read_bytes()[-10:]
    assert tail(tmp_path / "none") == b""

"""`launcher ps`: the computed columns, -q, --filter, --format and fitting the terminal.

Run records are made directly in a case root's real coordinator (as a run leaves them); the CLI
runs in-process through its real entry point.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeWorld
from helpers import CliResult, clean_env, ensure_agent_image, invoke, release_root, run_cli

from launcher.core import run_view
from launcher.core.transitions import RunState
from launcher.models import NewRun, utcnow


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeWorld]:
    monkeypatch.delenv("COLUMNS", raising=False)
    made = FakeWorld.make(tmp_path)
    yield made
    made.close()


def add_run(world: FakeWorld, *, state: RunState, seconds: float, details: dict[str, Any] | None = None) -> str:
    task = world.new_task()
    run = world.store.create_run(NewRun(task_id=task, image=None, owner=None, worktrees_dir=str(world.root / "wt")))
    # Its created_at is the coordinator's; "how long it ran" is set by when it ended.
    ended = None if state in {RunState.CREATED, RunState.RUNNING} else run.created_at + timedelta(seconds=seconds)
    world.store.update_run(
        run.id,
        state=state,
        ended_at=ended,
        exit_code=None if ended is None else (0 if state == RunState.EXITED else 3),
        details={"repo": str(world.repo.toplevel), **(details or {})},
    )
    return run.id


def commits(n: int) -> dict[str, Any]:
    return {"harvest": {"commits": [{"sha": f"{i:040x}", "subject": f"c{i}"} for i in range(n)]}}


def ps(world: FakeWorld, *args: str) -> CliResult:
    return invoke(["--root", str(world.root), "ps", *args])


def test_the_table_shows_duration_commits_result_and_denials(world: FakeWorld) -> None:
    done = add_run(
        world,
        state=RunState.EXITED,
        seconds=252,
        details={
            **commits(3),
            "agent_result": {"state": "valid", "result": {"status": "completed", "summary": "ok"}},
            "egress": {"denied_decisions": 7},
        },
    )
    live = add_run(world, state=RunState.RUNNING, seconds=3725)

    result = ps(world, "--all")

    assert result.exit_code == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split() == [
        "RUN",
        "TASK",
        "STATE",
        "EXIT",
        "CREATED",
        "DURATION",
        "COMMITS",
        "RESULT",
        "DENIED",
        "BRANCH",
        "PUSHED",
    ]
    by_id = {line.split()[0]: line.split() for line in rows}
    # CREATED is two words (date, time): DURATION is the 7th word.
    assert by_id[done][2:] == ["exited", "0", *by_id[done][4:6], "4m12s", "3", "completed", "7", by_id[done][-1]]
    assert by_id[live][2] == "running"
    # A live run's duration counts to now.
    record = world.store.get_run(live)
    assert run_view.row(record, record.created_at + timedelta(seconds=3725))["Duration"] == "1h02m"
    assert run_view.row(record, utcnow())["Duration"] in {"0s", "1s", "2s"}


def test_duration_text_is_short_and_exact() -> None:
    assert [run_view.duration_text(s) for s in (0, 3, 59.9, 60, 252, 3599, 3720, 90061)] == [
        "0s",
        "3s",
        "59s",
        "1m00s",
        "4m12s",
        "59m59s",
        "1h02m",
        "25h01m",
    ]


def test_a_narrow_terminal_drops_empty_then_the_widest_optional_columns(
    world: FakeWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_run(world, state=RunState.EXITED, seconds=5, details=commits(1))
    wide = ps(world, "--all").stdout.splitlines()
    monkeypatch.setenv("COLUMNS", "80")

    narrow = ps(world, "--all").stdout.splitlines()

    assert all(len(line) <= 80 for line in narrow), narrow
    assert narrow[0].split()[:3] == ["RUN", "TASK", "STATE"]
    dropped = set(wide[0].split()) - set(narrow[0].split())
    # Columns no run has a value in go first (RESULT, DENIED, PUSHED), then the widest (BRANCH).
    assert dropped == {"RESULT", "DENIED", "PUSHED", "BRANCH"}
    assert {"EXIT", "DURATION", "COMMITS"} <= set(narrow[0].split())
    monkeypatch.setenv("COLUMNS", "10")
    assert ps(world, "--all").stdout.splitlines()[0].split() == ["RUN", "TASK", "STATE"]


def test_quiet_prints_ids_only_and_filters_select(world: FakeWorld) -> None:
    done = add_run(world, state=RunState.EXITED, seconds=5)
    failed = add_run(world, state=RunState.FAILED, seconds=5)
    live = add_run(world, state=RunState.RUNNING, seconds=5)

    assert ps(world, "-q").stdout.split() == [live]
    assert sorted(ps(world, "-q", "--all").stdout.split()) == sorted([done, failed, live])
    # A state filter looks at finished runs without --all; the same key twice is either value.
    assert ps(world, "-q", "--filter", "state=failed").stdout.split() == [failed]
    assert sorted(ps(world, "-q", "-f", "state=failed", "-f", "state=exited").stdout.split()) == sorted([done, failed])
    task_of_failed = world.store.get_run(failed).task_id
    assert ps(world, "-q", "-a", "--filter", f"task={task_of_failed}").stdout.split() == [failed]
    # Different keys must all hold.
    assert ps(world, "-q", "-f", f"task={task_of_failed}", "-f", "state=exited").stdout.split() == []
    assert sorted(ps(world, "-q", "-a", "--filter", "repo=repo").stdout.split()) == sorted([done, failed, live])
    assert ps(world, "-q", "-a", "--filter", "repo=elsewhere").stdout == ""
    assert ps(world, "-a", "--filter", "repo=elsewhere").stdout.strip() == "no runs match"


def test_label_filters_select_as_dockers_and_labels_show_in_templates(world: FakeWorld) -> None:
    payments = add_run(world, state=RunState.EXITED, seconds=5, details={"labels": {"team": "payments", "ci": ""}})
    search = add_run(world, state=RunState.EXITED, seconds=5, details={"labels": {"team": "search"}})
    bare = add_run(world, state=RunState.EXITED, seconds=5)

    def selected(*filters: str) -> list[str]:
        args = [arg for f in filters for arg in ("--filter", f)]
        return sorted(ps(world, "-q", "-a", *args).stdout.split())

    assert selected("label=team") == sorted([payments, search])
    assert selected("label=team=payments") == [payments]
    assert selected("label=team=pay") == []
    # Unlike other keys, label filters must all hold (docker's rule): a run with team and ci.
    assert selected("label=team", "label=ci") == [payments]
    assert selected("label=ci", "state=exited") == [payments]
    assert selected("label=nobody") == []
    lines = ps(world, "-a", "--format", "{{.ID}} {{.Labels}}").stdout.splitlines()
    assert sorted(lines) == sorted([f"{payments} ci,team=payments", f"{search} team=search", f"{bare} "])
    shown = {r["id"]: r["labels"] for r in json.loads(ps(world, "-a", "--json").stdout)}
    assert shown == {payments: {"team": "payments", "ci": ""}, search: {"team": "search"}, bare: {}}
    assert json.loads(ps(world, "-a", "-f", "label=team=search", "--format", "{{json .Labels}}").stdout) == {
        "team": "search"
    }


@pytest.mark.parametrize("bad", ["has space=x", "=x", "-lead=x", "ok=line\nbreak", "k=" + "v" * 257])
def test_a_label_launcher_does_not_keep_is_a_usage_error_and_nothing_is_made(world: FakeWorld, bad: str) -> None:
    task = world.new_task()
    before = world.store.list_runs()

    result = invoke(["--root", str(world.root), "run", task, "--label", bad, "--network", "none", "--", "true"])

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "--label" in result.stderr
    assert world.store.list_runs() == before


@pytest.mark.parametrize("bad", ["colour=red", "state", "=x", "state="])
def test_a_bad_filter_is_a_usage_error_naming_the_keys(world: FakeWorld, bad: str) -> None:
    result = ps(world, "--filter", bad)

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert "id, state, task, repo, label" in result.stderr
    assert result.stdout == ""


def test_format_templates_and_json(world: FakeWorld) -> None:
    run_id = add_run(world, state=RunState.EXITED, seconds=65, details=commits(2))

    line = ps(world, "-a", "--format", "{{.ID}}\\t{{.State}} {{ .Duration }} {{.Commits}} {{json .Exit}}").stdout
    assert line == f"{run_id}\texited 1m05s 2 0\n"
    whole = json.loads(ps(world, "-a", "--format", "{{json .}}").stdout)
    assert whole["ID"] == run_id
    assert whole["Commits"] == 2
    assert whole["Result"] is None
    assert set(whole) == set(run_view.FIELDS)
    # --format json is --json: the shipped schema's RunView, unchanged.
    assert json.loads(ps(world, "-a", "--format", "json").stdout) == json.loads(ps(world, "-a", "--json").stdout)
    assert ps(world, "-a", "--format", "table").stdout.startswith("RUN ")


@pytest.mark.parametrize("bad", ["{{.Nope}}", "{{.ID | upper}}", "yaml"])
def test_a_bad_format_is_a_usage_error_naming_the_fields(world: FakeWorld, bad: str) -> None:
    add_run(world, state=RunState.EXITED, seconds=5)

    result = ps(world, "-a", "--format", bad)

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert ("ID, Task, State" in result.stderr) or ("json, table" in result.stderr)


# -- against real runs (Docker, real git) ------------------------------------------------------

AGENT_OK = r"""
echo one > a.txt && git add a.txt && git commit -qm one
echo two > b.txt && git add b.txt && git commit -qm two
echo "first line"
echo "last line of ok"
"""
AGENT_FAILS = 'echo "starting"; echo "last line of failing"; exit 3'


@pytest.mark.docker
@pytest.mark.slow
def test_ps_logs_and_wait_against_real_runs(git_repo: Path, case_root: Path) -> None:
    ensure_agent_image()
    root = case_root.resolve()

    def cli(*args: str) -> CliResult:
        return run_cli(["--root", str(root), *args], env=clean_env({"COLUMNS": "250"}), timeout=240)

    try:
        ids = {}
        for name, script, code in (("ok", AGENT_OK, 0), ("failing", AGENT_FAILS, 10)):
            result = cli(
                "run",
                "--repo",
                str(git_repo),
                "--title",
                f"Watch {name}",
                "--label",
                f"outcome={name}",
                "--label",
                "suite=ps",
                "--network",
                "none",
                "--json",
                "--",
                "sh",
                "-c",
                script,
            )
            assert result.exit_code == code, result.stderr
            ids[name] = json.loads(result.stdout)["id"]
        ok, failing = ids["ok"], ids["failing"]

        lines = cli("ps", "-a", "--format", "{{.ID}} {{.State}} {{.Exit}} {{.Commits}}").stdout.splitlines()
        assert sorted(lines) == sorted([f"{ok} exited 0 2", f"{failing} failed 3 0"])
        assert cli("ps", "-q", "--filter", "state=failed").stdout.split() == [failing]
        assert cli("ps", "-q", "-a", "--filter", "repo=demo").stdout.split() == [ok, failing]
        assert cli("ps", "-q", "-a", "--filter", "label=suite=ps").stdout.split() == [ok, failing]
        assert cli("ps", "-q", "-a", "-f", "label=suite", "-f", "label=outcome=failing").stdout.split() == [failing]
        assert cli("ps", "-a", "-f", f"id={ok}", "--format", "{{.Labels}}").stdout == "outcome=ok,suite=ps\n"
        ok_task = json.loads(cli("ps", "-a", "--format", "{{json .}}", "-f", "state=exited").stdout)["Task"]
        assert [r["id"] for r in json.loads(cli("ps", "-a", "-f", f"task={ok_task}", "--format", "json").stdout)] == [
            ok
        ]
        table = cli("ps", "-a").stdout.splitlines()
        assert table[0].split()[5:8] == ["DURATION", "COMMITS", "RESULT"]
        assert table[0].split()[-1] == "LAST"
        assert next(line for line in table if line.startswith(ok)).endswith("last line of ok")

        tail = cli("logs", "--tail", "1", ok, failing)
        assert tail.exit_code == 0, tail.stderr
        width = max(len(ok), len(failing))
        assert tail.stdout.splitlines() == [
            f"{ok.ljust(width)} | last line of ok",
            f"{failing.ljust(width)} | last line of failing",
        ]

        waited = cli("wait", ok, failing)
        assert waited.exit_code == 10, waited.stderr
        assert waited.stdout.splitlines() == [f"{ok} exited 0", f"{failing} failed 3"]
        assert cli("wait", ok).exit_code == 0
    finally:
        leftovers = release_root(root)
    assert not leftovers, leftovers


def test_the_last_output_line_shows_as_a_terminal_left_it(world: FakeWorld, monkeypatch: pytest.MonkeyPatch) -> None:
    quiet = add_run(world, state=RunState.RUNNING, seconds=1)
    talking = add_run(world, state=RunState.RUNNING, seconds=1)
    log = world.deps.paths(world.store.get_run(talking)).log
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_bytes(b"first\nprogress 10%\rprogress 100%\n\x1b[31mred\x1b[0m tail\n\n")

    result = ps(world)

    header, *rows = result.stdout.splitlines()
    assert header.split()[-1] == "LAST"
    by_id = {line.split()[0]: line for line in rows}
    # Escape codes are shown as text (^[), never sent to the terminal.
    assert by_id[talking].endswith("^[[31mred^[[0m tail"), by_id[talking]
    assert "\x1b" not in result.stdout
    assert "progress" not in by_id[talking]
    assert "tail" not in by_id[quiet]
    log.write_bytes(b"x" * 200 + b"\n")
    wide = ps(world).stdout
    assert "x" * 80 in wide
    assert "x" * 81 not in wide, "the last line is cut at 80 characters"
    monkeypatch.setenv("COLUMNS", "120")
    narrow = ps(world).stdout.splitlines()
    assert "LAST" not in narrow[0].split(), "the widest optional column goes first on a narrow terminal"
    assert max(len(line) for line in narrow) <= 120

"""A run's output on its way to the log, decided on the fakes: what the live stream missed, the cap,
the bytes kept exactly, the terminal fed from the log; and how runs are stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes import FakeWorld

from launcher.core.run import RunRequest
from launcher.core.run.lifecycle import stop
from launcher.errors import InvalidInputError
from launcher.models import RunOwner, RunRecord

RESULT = b'<<<AGENT_RESULT\n{"status": "completed", "summary": "all done"}\nAGENT_RESULT>>>\n'
# Invalid UTF-8, escape sequences and a last line without a newline: all kept as they are.
ODD = b"\xff\xfe\xc3(\x1b[2J\x1b]0;title\x07\rno newline at the end"


def output_of(size: int) -> bytes:
    lines = b"".join(b"line %d of the agent's output\n" % i for i in range(size // 30))
    return lines + RESULT + ODD


def run_with(world: FakeWorld, output: bytes | None, echo: list[bytes] | None = None, **request: object) -> RunRecord:
    """A run whose agent prints ``output`` (None: the agent already set on the sandbox)."""
    if output is not None:
        world.sandbox.agent = lambda _spec, _out: (0, output)
    plan = world.service.plan(RunRequest(task=world.new_task(), network="none", **request), host_environ={})
    run = world.service.create(plan, RunOwner(host="test", pid=1))
    return world.service.execute(plan, run, echo=echo.append if echo is not None else None)


def log_of(run: RunRecord) -> bytes:
    return Path(run.details.log or "").read_bytes()


def test_every_byte_reaches_the_log_exactly_and_the_terminal_gets_the_same(world: FakeWorld) -> None:
    output = output_of(300_000)
    world.sandbox.chunk = 4096
    shown: list[bytes] = []
    run = run_with(world, output, echo=shown)
    assert log_of(run) == output
    assert b"".join(shown) == output
    assert run.details.output_bytes == len(output)
    assert run.details.log_dropped is None
    assert run.details.log_error is None
    assert run.details.agent_result is not None
    assert run.details.agent_result.state == "valid"


def test_what_the_live_stream_missed_is_read_from_the_engines_copy(world: FakeWorld) -> None:
    output = output_of(200_000)
    world.sandbox.stream_cut = 150_000  # the stream ends early, as `logs --follow` was seen to
    run = run_with(world, output)
    assert log_of(run) == output
    assert "logs" in world.sandbox.calls
    assert run.details.agent_result is not None
    assert run.details.agent_result.state == "valid"
    assert run.details.log_error is None


def test_a_broken_stream_is_completed_from_the_engines_copy(world: FakeWorld) -> None:
    output = output_of(100_000)
    world.sandbox.stream_cut, world.sandbox.stream_error = 70_001, ConnectionResetError("reset by peer")
    run = run_with(world, output)
    assert log_of(run) == output
    assert run.details.log_error is None


def test_a_broken_stream_the_engine_no_longer_holds_is_said_so(world: FakeWorld) -> None:
    output = output_of(100_000)
    world.sandbox.stream_cut, world.sandbox.stream_error = 70_000, ConnectionResetError("reset by peer")
    world.sandbox.engine_keeps = 20_000  # rotated: the engine's copy lacks the bytes the stream had
    run = run_with(world, output)
    assert log_of(run) == output[:70_000]
    assert run.details.log_error is not None
    assert "broke after 70000 bytes" in run.details.log_error
    assert "reset by peer" in run.details.log_error


def test_an_engine_copy_that_does_not_match_the_stream_is_not_appended(world: FakeWorld) -> None:
    output = output_of(100_000)
    world.sandbox.stream_cut = 90_000
    world.sandbox.engine_keeps = 95_000  # starts elsewhere: appending from it would duplicate bytes
    run = run_with(world, output)
    assert log_of(run) == output[:90_000]


def test_the_log_cap_keeps_the_start_and_the_end_and_marks_the_cut(tmp_path: Path) -> None:
    world = FakeWorld.make(tmp_path, log_max=64 * 1024)
    try:
        output = output_of(1_000_000)
        run = run_with(world, output)
        log = log_of(run)
        head, mark, tail = log.partition(b"\nlauncher: ")
        assert mark, "the log does not say where output was dropped"
        note, _, kept_tail = tail.partition(b"\n")
        assert output.startswith(head)
        assert output.endswith(kept_tail)
        assert len(head) + len(kept_tail) == 64 * 1024
        assert run.details.log_dropped == len(output) - 64 * 1024
        assert run.details.log_max == 64 * 1024
        assert run.details.output_bytes == len(output)
        assert f"{run.details.log_dropped} bytes of output dropped here".encode() in note
        # The end is kept, so the agent's result is still read.
        assert run.details.agent_result is not None
        assert run.details.agent_result.state == "valid"
    finally:
        world.close()


def test_secrets_are_redacted_on_the_way_to_the_log(world: FakeWorld, tmp_path: Path) -> None:
    secret = "-----BEGIN KEY-----\nAAAAB3NzaC1yc2EAAAADAQABAAABAQ\n-----END KEY-----"
    (tmp_path / "key").write_text(secret + "\n")
    output = output_of(100_000) + secret.encode() + b"\n" + b"x" * 50_000 + secret.encode()
    world.sandbox.chunk = 7  # every chunk boundary falls somewhere else in the secret
    run = run_with(world, output, secrets=[f"KEY={tmp_path / 'key'}"])
    assert log_of(run) == output.replace(secret.encode(), b"***")


def test_a_secret_too_short_to_redact_is_refused_before_anything_is_created(world: FakeWorld, tmp_path: Path) -> None:
    (tmp_path / "pin").write_text("1234\n")
    task_id = world.new_task()
    with pytest.raises(InvalidInputError, match="at least 8 bytes"):
        world.service.plan(
            RunRequest(task=task_id, network="none", secrets=[f"PIN={tmp_path / 'pin'}"]), host_environ={}
        )
    assert world.store.list_runs(task_id=task_id) == []
    assert world.sandbox.containers == {}
    assert "create" not in world.sandbox.calls


def test_a_timeout_stops_the_agent_with_the_runs_grace(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, _out: (None, b"")
    run = world.run_task(timeout=5, grace=7)
    assert run.state.value == "timed-out"
    assert [grace for _, grace in world.sandbox.stops] == [7]
    assert run.details.grace == 7


def test_stopping_a_run_that_has_ended_is_not_an_error_and_touches_nothing(world: FakeWorld) -> None:
    world.sandbox.agent = lambda _spec, _out: (0, b"done\n")
    run = world.run_task()
    calls = list(world.sandbox.calls)
    again = stop(world.deps, run.id, lambda _owner: True)
    assert (again.state, again.cancel_requested) == (run.state, run.cancel_requested)
    assert world.sandbox.calls == calls


def test_stop_gives_a_live_run_its_own_grace_unless_told_otherwise(world: FakeWorld) -> None:
    plan = world.service.plan(RunRequest(task=world.new_task(), network="none", grace=30), host_environ={})
    for asked, given in ((None, 30), (0, 0)):
        run = world.service.create(plan, RunOwner(host="test", pid=1))
        container = f"c{run.seq:063d}"
        world.store.update_run(run.id, container_id=container)
        world.sandbox.stops.clear()
        # Its owner is gone, so this process settles it once it has stopped.
        stopped = stop(world.deps, run.id, lambda _owner: False, grace=asked)
        assert stopped.state.value == "cancelled"
        assert world.sandbox.stops == [(container, given)]


def test_secrets_travel_as_files_only(world: FakeWorld, tmp_path: Path) -> None:
    (tmp_path / "key").write_text("multi\nline secret value\n")
    seen: dict[str, object] = {}

    def agent(spec, _out):  # type: ignore[no-untyped-def]
        (mount,) = [m for m in spec.mounts if m.target == "/run/launcher-secrets"]
        folder = Path(mount.source or "")
        seen.update(env=dict(spec.env), read_only=mount.read_only, value=(folder / "KEY").read_bytes())
        seen.update(mode=oct((folder / "KEY").stat().st_mode & 0o777), folder_mode=oct(folder.stat().st_mode & 0o777))
        return 0, b""

    world.sandbox.agent = agent
    run = run_with(world, None, secrets=[f"KEY={tmp_path / 'key'}"])
    env = seen["env"]
    assert isinstance(env, dict)
    assert "KEY" not in env
    assert env["KEY_FILE"] == "/run/launcher-secrets/KEY"
    assert env["LAUNCHER_SECRETS"] == "KEY"
    assert "multi" not in repr(env)
    assert seen["read_only"] is True
    assert seen["value"] == b"multi\nline secret value"
    assert (seen["mode"], seen["folder_mode"]) == ("0o400", "0o700")
    assert not world.deps.paths(run).sandbox.exists(), "the secrets go with the sandbox folder"

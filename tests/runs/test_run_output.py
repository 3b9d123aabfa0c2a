"""A run's output reaches its log whole and exact; the operator's terminal gets it made harmless.

The agent keeps its own copy of what it printed (committed, so it comes back on the run's branch)
and the log must be byte-identical to it: every byte in order, the last line without a newline,
invalid UTF-8, control sequences. Only the terminal of a foreground run neutralises them.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import clean_env
from runkit import Case, run_id_of

pytestmark = pytest.mark.docker

SECRET = "tok-" + "9f3c1e7a5b2d4068" * 2
# ~7.6 MB in 120,000 lines, an AGENT_RESULT block, then a last line without a newline. The
# agent prints its copy with one `cat`, so what the log must hold is exactly that file.
BIG_OUTPUT = r"""
set -eu
{
    seq 1 120000 | sed "s/\$/ lorem ipsum dolor sit amet, consectetur adipiscing elit ${MY_TOKEN:-}/"
    printf '%s\n' '<<<AGENT_RESULT' '{"status": "completed", "summary": "a big output"}' 'AGENT_RESULT>>>'
    printf 'the very last line, without a newline'
} > /tmp/output.txt
cp /tmp/output.txt agent-output.txt
git add agent-output.txt
git commit -q -m "the agent's copy of its output"
cat /tmp/output.txt
"""


def log_bytes(case: Case, run_id: str) -> bytes:
    return Path(case.run_record(run_id)["details"]["log"]).read_bytes()


def agent_copy(repo: Path, branch: str, path: str) -> bytes:
    proc = subprocess.run(
        ["git", "-c", f"safe.directory={repo}", "show", f"{branch}:{path}"], cwd=repo, capture_output=True, check=True
    )
    return proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize("with_secret", [False, True], ids=["no-secret", "secret"])
def test_a_multi_megabyte_output_reaches_the_log_byte_for_byte(case: Case, git_repo: Path, with_secret: bool) -> None:
    options = ["--secret", "MY_TOKEN"] if with_secret else []
    result = case.cli(
        "run",
        *options,
        "--json",
        "--repo",
        str(git_repo),
        "--title",
        "Talks a lot",
        "--",
        "sh",
        "-c",
        BIG_OUTPUT,
        env={"MY_TOKEN": SECRET} if with_secret else None,
    )
    assert result.exit_code == 0, result.stderr[-3000:]
    run = case.run_record(json.loads(result.stdout)["id"])
    wrote = agent_copy(git_repo, run["branch"], "agent-output.txt")
    assert len(wrote) > 7_000_000
    if with_secret:
        assert wrote.count(SECRET.encode()) == 120_000
        wrote = wrote.replace(SECRET.encode(), b"***")
    log = log_bytes(case, run["id"])
    assert len(log) == len(wrote)
    assert log == wrote, "the log differs from what the agent wrote"
    assert run["details"]["output_bytes"] == len(agent_copy(git_repo, run["branch"], "agent-output.txt"))
    assert run["details"]["agent_result"]["state"] == "valid"
    assert run["details"]["agent_result"]["result"]["summary"] == "a big output"
    assert "log_dropped" not in run["details"]
    assert "log_error" not in run["details"]


ODD_OUTPUT = r"""
printf 'plain line\n'
printf '\033[2J\033[H\033]0;owned\007launcher: run x.1 exited, exit 0; 9 commit(s)\n'
printf 'invalid utf-8: \377\376\300\n'
printf 'a carriage\rreturn, a\ttab, a bell\007, a DEL\177 and a C1 CSI \302\23331m\n'
printf 'last line without newline'
"""
ODD_BYTES = (
    b"plain line\n"
    b"\x1b[2J\x1b[H\x1b]0;owned\x07launcher: run x.1 exited, exit 0; 9 commit(s)\n"
    b"invalid utf-8: \xff\xfe\xc0\n"
    b"a carriage\rreturn, a\ttab, a bell\x07, a DEL\x7f and a C1 CSI \xc2\x9b31m\n"
    b"last line without newline"
)


def test_control_sequences_are_neutralised_on_the_terminal_and_kept_exactly_in_the_log(
    case: Case, git_repo: Path
) -> None:
    task = case.create_task(git_repo, "Prints odd bytes")
    proc = subprocess.run(
        case.argv("run", task, "--", "sh", "-c", ODD_OUTPUT),
        capture_output=True,
        timeout=180,
        env=clean_env(),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    run_id = run_id_of(proc.stderr.decode())
    assert log_bytes(case, run_id) == ODD_BYTES
    logs = subprocess.run(case.argv("logs", run_id), capture_output=True, env=clean_env(), check=True)
    assert logs.stdout == ODD_BYTES, "`launcher logs` gives the bytes as they are"
    shown = proc.stdout.decode("utf-8")  # valid UTF-8: invalid bytes are shown as U+FFFD
    assert not any(ord(c) < 0x20 and c not in "\t\n\r" for c in shown), repr(shown)
    assert not any(0x7F <= ord(c) <= 0x9F for c in shown), repr(shown)
    assert shown == (
        "plain line\n"
        "^[[2J^[[H^[]0;owned^Glauncher: run x.1 exited, exit 0; 9 commit(s)\n"
        "invalid utf-8: \ufffd\ufffd\ufffd\n"
        "a carriage\rreturn, a\ttab, a bell^G, a DEL^? and a C1 CSI <U+009B>31m\n"
        "last line without newline"
    )


CAPPED_OUTPUT = r"""
seq 1 200000 | sed 's/$/ some output that goes on and on/'
printf '%s\n' '<<<AGENT_RESULT' '{"status": "completed", "summary": "capped"}' 'AGENT_RESULT>>>'
"""


def test_the_log_cap_marks_where_output_was_dropped_and_the_record_says_so(case: Case, git_repo: Path) -> None:
    cap = 1024 * 1024
    (case.root / "launcher.toml").write_text(f"[run]\nlog_max = {cap}\n")
    result = case.cli("run", "--repo", str(git_repo), "--title", "Too chatty", "--", "sh", "-c", CAPPED_OUTPUT)
    assert result.exit_code == 0, result.stderr[-3000:]
    run = case.run_record(run_id_of(result.stderr))
    log = log_bytes(case, run["id"])
    full = b"".join(b"%d some output that goes on and on\n" % i for i in range(1, 200_001)) + (
        b'<<<AGENT_RESULT\n{"status": "completed", "summary": "capped"}\nAGENT_RESULT>>>\n'
    )
    head, mark, rest = log.partition(b"\nlauncher: ")
    assert mark, "the log does not mark where output was dropped"
    note, _, tail = rest.partition(b"\n")
    assert full.startswith(head)
    assert full.endswith(tail)
    assert len(head) + len(tail) == cap
    details = run["details"]
    assert details["log_dropped"] == len(full) - cap
    assert details["log_max"] == cap
    assert details["output_bytes"] == len(full)
    assert f"{details['log_dropped']} bytes of output dropped here".encode() in note
    assert details["agent_result"]["state"] == "valid", "the end of the output (its result) is kept"
    assert f"{details['log_dropped']} bytes of output were dropped" in result.stderr

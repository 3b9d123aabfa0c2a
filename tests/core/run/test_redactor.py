"""Redaction of a run's output as a stream: across lines and chunks, in linear time, nothing held back
for longer than a secret is long."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from launcher.core.run.secrets import MIN_SECRET_LENGTH, Redactor, resolve_secrets, secret_patterns
from launcher.errors import InvalidInputError

PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDx5tPzD2yB9qYk1f2wzjLQ1l0zZq3V5n3kX0c8Yb9pAAAAJgAAAAAAAAAA\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


def reference(data: bytes, values: list[str]) -> bytes:
    """Every byte inside any occurrence of any pattern is covered; each covered run becomes ***."""
    covered = [False] * len(data)
    for pattern in secret_patterns(values):
        for at in range(len(data) - len(pattern) + 1):
            if data.startswith(pattern, at):
                covered[at : at + len(pattern)] = [True] * len(pattern)
    out, at = bytearray(), 0
    while at < len(data):
        if covered[at]:
            while at < len(data) and covered[at]:
                at += 1
            out += b"***"
        else:
            out.append(data[at])
            at += 1
    return bytes(out)


def redact(values: list[str], chunks: list[bytes]) -> bytes:
    redactor = Redactor(values)
    return b"".join(redactor.feed(chunk) for chunk in chunks) + redactor.flush()


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    edges = [0, *points, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges)]


# Values from a small alphabet overlap, repeat and nest; the output is made of their pieces.
values_st = st.lists(st.text(alphabet="ab\n-", min_size=MIN_SECRET_LENGTH, max_size=16), min_size=1, max_size=3)


@st.composite
def outputs(draw: st.DrawFn) -> tuple[list[str], bytes, list[int]]:
    values = draw(values_st)
    pieces = draw(
        st.lists(
            st.one_of(
                st.sampled_from([v.encode() for v in values]),
                st.sampled_from([v.encode()[: len(v) // 2] for v in values] + [v.encode()[1:] for v in values]),
                st.binary(max_size=6),
                st.text(alphabet="ab\n-\r", max_size=6).map(str.encode),
            ),
            max_size=12,
        )
    )
    data = b"".join(pieces)
    return values, data, draw(st.lists(st.integers(min_value=0, max_value=10_000), max_size=8))


@pytest.mark.slow
@settings(max_examples=400, deadline=None)
@given(outputs())
def test_redaction_is_the_same_however_the_output_is_chunked(case: tuple[list[str], bytes, list[int]]) -> None:
    values, data, cuts = case
    expected = reference(data, values)
    assert redact(values, [data]) == expected
    assert redact(values, split(data, cuts)) == expected
    assert redact(values, [data[i : i + 1] for i in range(len(data))]) == expected


@settings(max_examples=200, deadline=None)
@given(outputs())
def test_no_secret_value_survives_redaction(case: tuple[list[str], bytes, list[int]]) -> None:
    values, data, cuts = case
    shown = redact(values, split(data, cuts))
    for value in values:
        assert value.encode() not in shown


def test_a_secret_split_across_two_chunks_is_redacted() -> None:
    secret = "tok-0123456789abcdef"
    line = f"progress 10%\rprogress 50% token={secret} progress 90%".encode()
    for cut in range(len(line) + 1):
        assert redact([secret], [line[:cut], line[cut:]]) == b"progress 10%\rprogress 50% token=*** progress 90%"


def test_a_multi_line_secret_is_redacted_whole_and_line_by_line() -> None:
    shown = redact([PEM], [f"key:\n{PEM}\nthen {PEM.splitlines()[1]} alone\n".encode()])
    assert shown == b"key:\n***\nthen *** alone\n"
    crlf = redact([PEM], ["\r\n".join(PEM.splitlines()).encode()])
    assert crlf.replace(b"***", b"") == b"\r\n" * 3


def test_a_long_line_without_newline_streams_through_at_once() -> None:
    """2 MB of progress output without a newline, 64 bytes at a time: nothing waits for a newline."""
    secret = "s3cr3t-" + "x" * 40
    redactor = Redactor([secret])
    fed, shown, hold = 0, bytearray(), len(secret) - 1
    chunk = b"#" * 63 + b"\r"
    started = time.monotonic()
    for i in range(2 * 1024 * 1024 // len(chunk)):
        data = chunk if i != 10_000 else secret.encode()
        shown += redactor.feed(data)
        fed += len(data)
        redacted = len(secret) - 3 if i >= 10_000 else 0  # the secret shows as ***
        assert len(shown) >= fed - redacted - hold, "the redactor held back more than a secret's length"
    shown += redactor.flush()
    elapsed = time.monotonic() - started
    assert secret.encode() not in shown
    assert shown.count(b"***") == 1
    assert len(shown) == fed - len(secret) + 3
    # Measured at about 0.1 s; a redactor that rescans what it holds takes minutes.
    assert elapsed < 20, f"redacting 2 MB took {elapsed:.1f} s"


def test_only_what_could_begin_a_secret_is_held_back() -> None:
    """A line waiting for more output shows at once, unless it ends the way a secret begins."""
    redactor = Redactor(["tok-0123456789abcdef"])
    assert redactor.feed(b"FACT sha=3f2a\n") == b"FACT sha=3f2a\n"
    assert redactor.feed(b"progress 40% tok") == b"progress 40% "
    assert redactor.feed(b"-01234") == b""
    assert redactor.feed(b"56789abcdef done") == b"*** done"
    assert redactor.feed(b" tok-0123") == b" "
    assert redactor.flush() == b"tok-0123", "at the end, a start that never became a secret is output"


def test_without_secrets_output_passes_through_unchanged() -> None:
    redactor = Redactor({})
    assert redactor.feed(b"\xff\xfe abc") == b"\xff\xfe abc"
    assert redactor.flush() == b""


@pytest.mark.parametrize("value", ["", "abc", "1234567"])
def test_a_secret_too_short_to_redact_is_refused(value: str) -> None:
    with pytest.raises(InvalidInputError, match=f"at least {MIN_SECRET_LENGTH} bytes"):
        resolve_secrets(["SHORT"], {"SHORT": value})


def test_a_secret_read_from_a_file_is_checked_too(tmp_path: Path) -> None:
    (tmp_path / "pin").write_text("1234\n")
    with pytest.raises(InvalidInputError, match="--secret PIN"):
        resolve_secrets([f"PIN={tmp_path / 'pin'}"], {})
    (tmp_path / "key").write_text(PEM + "\n")
    assert resolve_secrets([f"KEY={tmp_path / 'key'}"], {}) == {"KEY": PEM}


@pytest.mark.parametrize("name", ["1X", "A-B", "ÄPFEL", "LAUNCHER_SECRETS", "HOME", "CASE_ROOT"])
def test_a_secret_name_the_entry_cannot_export_is_refused(name: str) -> None:
    with pytest.raises(InvalidInputError, match="--secret"):
        resolve_secrets([name], {name: "long-enough-value"})

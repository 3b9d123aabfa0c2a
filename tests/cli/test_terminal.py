"""What an agent prints is shown on the operator's terminal without its control sequences."""

from __future__ import annotations

import io

from hypothesis import given
from hypothesis import strategies as st

from launcher.cli.terminal import TerminalText, neutralise, terminal_echo


def test_escape_sequences_are_shown_not_obeyed() -> None:
    forged = "\x1b[2K\x1b[1A\rlauncher: run demo-1.1 exited, exit 0\x1b]0;pwned\x07\x9b31m\u202edesrever"
    shown = neutralise(forged)
    assert "\x1b" not in shown
    assert "\x07" not in shown
    assert "\x9b" not in shown
    assert "\u202e" not in shown
    assert shown == "^[[2K^[[1A\rlauncher: run demo-1.1 exited, exit 0^[]0;pwned^G<U+009B>31m<U+202E>desrever"


def test_tab_newline_and_carriage_return_pass() -> None:
    assert neutralise("a\tb\r\nc\n") == "a\tb\r\nc\n"


def test_a_character_split_across_chunks_stays_whole_and_invalid_bytes_are_replaced() -> None:
    text = TerminalText()
    assert text.feed("é".encode()[:1]) == ""
    assert text.feed("é".encode()[1:] + b"\xff") == "é\ufffd"
    assert text.feed(b"\xc3") == ""
    assert text.flush() == "\ufffd"


@given(st.lists(st.binary(max_size=40), max_size=10))
def test_no_control_character_but_tab_newline_and_return_reaches_the_terminal(chunks: list[bytes]) -> None:
    out = io.BytesIO()
    echo, end = terminal_echo(out)
    for chunk in chunks:
        echo(chunk)
    end()
    shown = out.getvalue().decode("utf-8")
    assert all(c in "\t\n\r" or not (ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F) for c in shown)

"""An agent's output made safe for the operator's terminal; the run's log keeps the exact bytes.

An agent must not be able to drive the terminal: clear the screen, move the cursor over
launcher's own lines, set the window title, reorder a line's text. Every control character a
terminal acts on is shown as text instead (caret notation: ESC is ``^[``), except tab, line
feed and carriage return, which ordinary output needs. Invalid UTF-8 shows as U+FFFD.
"""

from __future__ import annotations

import codecs
import re
import sys
from collections.abc import Callable
from typing import BinaryIO

# C0 controls but \t \n \r; DEL; C1 controls (CSI, OSC, … as single characters); and the
# bidirectional formatting characters that reorder what a line shows.
_UNSAFE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _shown(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


def neutralise(text: str) -> str:
    return _UNSAFE.sub(_shown, text)


class TerminalText:
    """Decodes output as it comes (a character split across chunks stays whole), neutralised."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return neutralise(self._decoder.decode(data))

    def flush(self) -> str:
        return neutralise(self._decoder.decode(b"", final=True))


def terminal_echo(stream: BinaryIO | None = None) -> tuple[Callable[[bytes], None], Callable[[], None]]:
    """An echo for a run's output to stdout, and what to call once the output has ended."""
    out = stream if stream is not None else sys.stdout.buffer
    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8") if stream is None else "utf-8"
    text = TerminalText()

    def write(shown: str) -> None:
        if shown:
            out.write(shown.encode(encoding, "replace"))
            out.flush()

    return lambda data: write(text.feed(data)), lambda: write(text.flush())

"""Where a path sits in a shell script: a small quoting/here-document lexer, and the root expression.

Used by `paths fix` to choose how to replace a hard-coded root in each context.
"""

from __future__ import annotations

from collections.abc import Callable

_WORD_START = frozenset(" \t\n;&|()")


def _line_end(text: str, i: int) -> int:
    end = text.find("\n", i)
    return len(text) if end < 0 else end


def _quoting(stack: list[str]) -> str:
    for frame in reversed(stack):
        if frame != "brace":
            return {"dq": "double", "sq": "single"}.get(frame, "unquoted")
    return "unquoted"  # pragma: no cover - the stack always holds "top"


def _heredoc_op(text: str, i: int, pending: list[tuple[str, bool, bool]]) -> int:
    """Parse the delimiter after `<<` at ``i``; queue the body for the end of the line."""
    strip = text.startswith("-", i)
    i += strip
    while i < len(text) and text[i] in " \t":
        i += 1
    start = i
    while i < len(text) and text[i] not in " \t\r\n;&|<>()":
        i += 1
    word = text[start:i]
    delimiter = word.translate(str.maketrans("", "", "'\"\\"))
    if delimiter and (delimiter[0].isalpha() or delimiter[0] == "_"):
        pending.append((delimiter, strip, delimiter == word))
    return i


def _heredoc_bodies(
    text: str, i: int, pending: list[tuple[str, bool, bool]], mark: Callable[[int, int, str], None]
) -> int:
    for delimiter, strip, expands in pending:
        j, body = i, []
        while j < len(text):
            end = _line_end(text, j)
            line = text[j:end].rstrip("\r")
            if (line.lstrip("\t") if strip else line) == delimiter:
                break
            body.append((j, end))
            j = end + 1
        else:
            continue  # no terminator: not a here-document after all
        for start, end in body:
            mark(start, end, "heredoc" if expands else "literal")
        i = _line_end(text, j) + 1
    return i


def shell_contexts(text: str, offsets: set[int]) -> dict[int, str]:
    """The quoting context at each offset of a shell script, from a small lexer.

    Contexts: unquoted, double, single, comment, heredoc (expanding), literal (quoted
    here-document), shebang. It knows quotes, `$( )`, `${ }`, backticks, arithmetic,
    comments and here-documents; enough for where a path sits, not a full parser.
    """
    out: dict[int, str] = {}
    stack: list[str] = ["top"]
    pending: list[tuple[str, bool, bool]] = []

    def mark(start: int, end: int, context: str) -> None:
        out.update({o: context for o in offsets if start <= o < end})

    i, n = 0, len(text)
    if text.startswith("#!"):
        i = _line_end(text, 0)
        mark(0, i, "shebang")
    while i < n:
        frame, c, two = stack[-1], text[i], text[i : i + 2]
        if i in offsets:
            out[i] = _quoting(stack)
        step = 1
        if frame == "sq":
            if c == "'":
                stack.pop()
        elif c == "\\":
            step = 2
        elif frame == "dq":
            if c == '"':
                stack.pop()
            elif two in ("$(", "${"):
                stack.append("sub" if two == "$(" else "brace")
                step = 2
            elif c == "`":
                stack.append("bt")
        elif text.startswith("$((", i) or (two == "((" and (i == 0 or text[i - 1] in _WORD_START)):
            stack.append("arith")
            step = 3 if c == "$" else 2
        elif frame == "arith" and two == "))":
            stack.pop()
            step = 2
        elif c in "'\"":
            stack.append("sq" if c == "'" else "dq")
        elif two in ("$(", "${"):
            stack.append("sub" if two == "$(" else "brace")
            step = 2
        elif c == "`":
            if frame == "bt":
                stack.pop()
            else:
                stack.append("bt")
        elif c == "(" and frame != "brace":
            stack.append("paren")
        elif (c == ")" and frame in ("sub", "paren")) or (c == "}" and frame == "brace"):
            stack.pop()
        elif c == "#" and frame != "brace" and (i == 0 or text[i - 1] in _WORD_START):
            end = _line_end(text, i)
            mark(i, end, "comment")
            step = end - i
        elif two == "<<" and not text.startswith("<<<", i) and "arith" not in stack and frame != "brace":
            step = _heredoc_op(text, i + 2, pending) - i
        elif c == "\n" and pending:
            step = _heredoc_bodies(text, i + 1, pending, mark) - i
            pending.clear()
        i += max(step, 1)
    return out


def shell_root_expression(depth: int) -> str:
    """`$CASE_ROOT`, else the folder ``depth`` levels above the running script."""
    return '${CASE_ROOT:-$(cd "$(dirname "$0")' + "/.." * depth + '" && pwd)}'

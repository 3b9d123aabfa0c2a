"""The page's HTML, CSS and JS: Python strings, so a wheel ships them without package data.

Everything dynamic goes through :func:`e` (agent output, branch names, task titles and hosts
are the agent's or a user's text: hostile). The JS only ever assigns ``textContent``.
"""

from __future__ import annotations

import html
from collections.abc import Iterable

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 1.5em 2em; color: #111; }
nav { padding: .6em 0; border-bottom: 1px solid #ccc; margin-bottom: 1em; }
nav a { margin-right: 1.2em; }
table { border-collapse: collapse; margin: .5em 0 1.5em; }
th, td { text-align: left; padding: .2em .8em .2em 0; border-bottom: 1px solid #eee; vertical-align: top; }
th { font-weight: 600; }
pre { background: #f6f6f6; padding: .8em; overflow: auto; max-height: 70vh; white-space: pre-wrap; }
.state-running, .state-preparing, .state-created { color: #0a6; font-weight: 600; }
.state-failed, .state-lost, .state-timed_out { color: #b00; }
.deny { color: #b00; }
form.filters input:not([type=checkbox]) { width: 9em; margin-right: .6em; }
.muted { color: #777; }
"""

# The log's live tail: the server sends each new piece as JSON text (an SSE `data:` line holds
# no newline), and `id:` is the byte offset, so an EventSource that reconnects resumes there.
JS = """
"use strict";
(function () {
  const pre = document.getElementById("log");
  if (!pre || !pre.dataset.stream) { return; }
  const state = document.getElementById("log-state");
  const source = new EventSource(pre.dataset.stream);
  source.onmessage = function (event) {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(document.createTextNode(JSON.parse(event.data)));
    if (atBottom) { pre.scrollTop = pre.scrollHeight; }
  };
  source.addEventListener("end", function (event) {
    source.close();
    if (state) { state.textContent = "run ended: " + JSON.parse(event.data); }
  });
  source.onerror = function () {
    if (state && source.readyState === EventSource.CLOSED) { state.textContent = "stream closed"; }
  };
  if (state) { state.textContent = "following"; }
})();
"""


def e(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def page(prefix: str, title: str, body: str, *, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        f'<meta name="referrer" content="no-referrer">{meta}'
        f"<title>{e(title)} · launcher</title>"
        f'<link rel="stylesheet" href="{prefix}/static/page.css"></head><body>'
        f'<nav><a href="{prefix}/">runs</a><a href="{prefix}/tasks">tasks</a>'
        f'<a href="{prefix}/queue">batch queue</a></nav>'
        f"<h1>{e(title)}</h1>{body}"
        f'<script src="{prefix}/static/page.js"></script></body></html>\n'
    )


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], *, table_id: str = "") -> str:
    """``rows`` hold HTML already escaped (cells may be links); headers are escaped here."""
    ident = f' id="{e(table_id)}"' if table_id else ""
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def link(href: str, text: object) -> str:
    return f'<a href="{e(href)}">{e(text)}</a>'


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    return table(["field", "value"], ([e(k), e(v)] for k, v in pairs), table_id="fields")

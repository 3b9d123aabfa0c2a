"""Hard-coded home paths in a harness tree: find them, fix them, and render `$CASE_ROOT` templates.

A hit is an absolute `/Users/<name>/…` or `/home/<name>/…` path in a Markdown, shell, TS/JS or
JSON file. The harness root it was hard-coded as is found from the tree itself: for each hit,
the shortest prefix whose remainder exists inside the scanned folder (`/Users/alice/dev/case`
for `/Users/alice/dev/case/scripts/x.sh` when `scripts/x.sh` exists); the prefix most hits
agree on is *the* hard-coded root. Hits under it, or whose own remainder exists, map to
`$CASE_ROOT/…`; the rest live outside the harness and are only reported.

No I/O beyond reading the tree: writing goes through a ``Writer`` the caller passes in.

One module per job: ``files`` (which files are read, and how), ``scan`` (hits and the root:
`paths check`), ``shell`` (where a path sits in a shell script), ``fix`` (`paths fix`) and
``templates`` (`paths render`).
"""

from launcher.core.pathscan.files import MAX_BYTES
from launcher.core.pathscan.fix import apply_fix, plan_fix
from launcher.core.pathscan.scan import OUTSIDE, check
from launcher.core.pathscan.shell import shell_contexts, shell_root_expression
from launcher.core.pathscan.templates import render, render_text

__all__ = [
    "MAX_BYTES",
    "OUTSIDE",
    "apply_fix",
    "check",
    "plan_fix",
    "render",
    "render_text",
    "shell_contexts",
    "shell_root_expression",
]

"""The JSON Schemas of launcher's `--json` output, generated from the models that print it.

    python -m launcher.models.schemas          # rewrite launcher/schemas/*.schema.json
    python -m launcher.models.schemas --check  # exit 1 if a shipped schema is out of date

Shipped in the package, so scripts can validate what they read; a test keeps them current and
checks real output against them.
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from launcher.models.config import SettingView
from launcher.models.views import RunView, TaskDetailView, TaskView

# file name -> (what prints it, the type of the document)
SCHEMAS: dict[str, tuple[str, Any]] = {
    "run.schema.json": ("launcher run --json, launcher stop --json", RunView),
    "ps.schema.json": ("launcher ps --json", list[RunView]),
    "task.schema.json": ("launcher task create/set-status --json", TaskView),
    "task-list.schema.json": ("launcher task list --json", list[TaskView]),
    "task-show.schema.json": ("launcher task show --json", TaskDetailView),
    "config-show.schema.json": ("launcher config show --json", list[SettingView]),
}


def generate(name: str) -> dict[str, Any]:
    printed_by, kind = SCHEMAS[name]
    schema: dict[str, Any] = TypeAdapter(kind).json_schema(mode="validation", by_alias=True)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"launcher/{name}",
        "description": f"What `{printed_by}` prints.",
        **schema,
    }


def render(name: str) -> str:
    return json.dumps(generate(name), indent=2, sort_keys=True) + "\n"


def shipped(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((resources.files("launcher") / "schemas" / name).read_text())
    return document


def main(argv: list[str]) -> int:
    folder = Path(__file__).resolve().parent.parent / "schemas"
    stale = []
    for name in SCHEMAS:
        target = folder / name
        text = render(name)
        if target.exists() and target.read_text() == text:
            continue
        stale.append(name)
        if "--check" not in argv:
            folder.mkdir(exist_ok=True)
            target.write_text(text)
    if stale and "--check" in argv:
        print(f"out of date: {', '.join(stale)}; run python -m launcher.models.schemas", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

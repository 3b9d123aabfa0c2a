"""A case harness built in case's shape (March 2026), for the drop-in tests.

projects.json with two repositories; tasks/active with N=1 and N=2 of one repository in
assorted statuses and agent phases; tasks/done with N=3; tasks/task.schema.json with
additionalProperties: false; scripts/task-status.sh and marker scripts with case's interface
and a hard-coded absolute harness root, as case's own scripts have.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))

from runkit import git, make_repo

HARDCODED_ROOT = "/Users/alice/dev/case"

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "status", "created", "repo"],
    "additionalProperties": False,
    "properties": {
        "id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["active", "implementing", "verifying", "reviewing", "closing", "pr-opened", "merged"],
        },
        "created": {"type": "string"},
        "repo": {"type": "string"},
        "issue": {"type": "string"},
        "issueType": {"type": "string", "enum": ["github", "linear", "freeform", "ideation"]},
        "contractPath": {"type": ["string", "null"]},
        "branch": {"type": "string"},
        "mode": {"type": "string", "enum": ["attended", "unattended"]},
        "profile": {"type": "string", "enum": ["tiny", "standard", "complex"]},
        "agents": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: {
                    "type": "object",
                    "properties": {
                        "started": {"type": ["string", "null"]},
                        "completed": {"type": ["string", "null"]},
                        "status": {"type": "string", "enum": ["pending", "running", "completed", "failed"]},
                    },
                }
                for name in ("orchestrator", "implementer", "verifier", "reviewer", "closer")
            },
        },
        "tested": {"type": "boolean"},
        "manualTested": {"type": "boolean"},
        "prUrl": {"type": ["string", "null"]},
        "prNumber": {"type": ["integer", "null"]},
        "fastTestCommand": {"type": ["string", "null"]},
        "checkCommand": {"type": ["string", "null"]},
        "checkBaseline": {"type": ["number", "null"]},
        "checkTarget": {"type": ["number", "null"]},
        "pendingRevision": {"type": ["object", "null"]},
    },
}

# case's interface: task-status.sh <task.json> <field> [value] [--from-marker], with the
# transition table and the evidence guard; it writes with a plain read-modify-write, as case does.
TASK_STATUS_SH = r"""#!/usr/bin/env bash
set -uo pipefail
CASE_REPO="@ROOT@"
TASK_FILE="${1:-}"; FIELD="${2:-}"; VALUE="${3:-}"; EXTRA="${4:-}"
[[ -f "$TASK_FILE" ]] || { echo "Error: task file not found: $TASK_FILE" >&2; exit 1; }
if [[ "$FIELD" == "tested" || "$FIELD" == "manualTested" ]] && [[ "$EXTRA" != "--from-marker" ]]; then
  echo "Error: $FIELD can only be set by marker scripts (pass --from-marker)" >&2; exit 1
fi
TS_FILE="$TASK_FILE" TS_FIELD="$FIELD" TS_VALUE="$VALUE" TS_EXTRA="$EXTRA" TS_FIFTH="${5:-}" python3 - <<'PY'
import json, os, sys
from datetime import datetime, timezone
TRANSITIONS = {
    "active": ["implementing"], "implementing": ["verifying", "active"],
    "verifying": ["reviewing", "closing", "implementing"], "reviewing": ["closing", "verifying"],
    "closing": ["pr-opened", "verifying"], "pr-opened": ["pr-opened", "merged"], "merged": [],
}
path, field, value = os.environ["TS_FILE"], os.environ["TS_FIELD"], os.environ["TS_VALUE"]
data = json.load(open(path))
if field == "agent":
    name, sub, val = value, os.environ["TS_EXTRA"], os.environ["TS_FIFTH"]
    if val == "now":
        val = datetime.now(timezone.utc).isoformat()
    data.setdefault("agents", {}).setdefault(name, {})[sub] = val
elif field == "status":
    current = data.get("status", "active")
    if value not in TRANSITIONS.get(current, []):
        print(f"Error: invalid transition {current} -> {value}", file=sys.stderr)
        sys.exit(1)
    data["status"] = value
elif value in ("true", "false"):
    data[field] = value == "true"
else:
    data[field] = value
json.dump(data, open(path, "w"), indent=2)
print(f"OK: {field}")
PY
"""

MARK_TESTED_SH = r"""#!/usr/bin/env bash
set -euo pipefail
CASE_REPO="@ROOT@"
TASK_SLUG=$(cat .case/active | tr -d '[:space:]')
mkdir -p ".case/${TASK_SLUG}"
TMPFILE=$(mktemp); cat > "$TMPFILE"
HASH=$(shasum -a 256 "$TMPFILE" | cut -d' ' -f1)
PASS=$(grep -ciE "(pass|passed|ok)" "$TMPFILE" || true)
FAIL=$(grep -ciE "(fail|failed|error)" "$TMPFILE" || true)
printf 'timestamp: %s\noutput_hash: %s\npass_indicators: %s\nfail_indicators: %s\n' \
  "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$HASH" "$PASS" "$FAIL" > ".case/${TASK_SLUG}/tested"
bash "${CASE_REPO}/scripts/task-status.sh" "${CASE_REPO}/tasks/active/${TASK_SLUG}.task.json" tested true --from-marker
"""

MARK_REVIEWED_SH = r"""#!/usr/bin/env bash
set -euo pipefail
CASE_REPO="@ROOT@"
TASK_SLUG=$(cat .case/active | tr -d '[:space:]')
mkdir -p ".case/${TASK_SLUG}"
printf 'timestamp: %s\ncritical: 0\nwarnings: %s\ninfo: 0\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${2:-0}" \
  > ".case/${TASK_SLUG}/reviewed"
"""


def task_doc(task_id: str, status: str, **extra: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "id": task_id,
        "status": status,
        "created": "2026-03-08T00:00:00Z",
        "repo": "widgets",
        "issue": "53",
        "issueType": "github",
        "branch": "fix/issue-53",
        "agents": {
            "orchestrator": {
                "status": "completed",
                "started": "2026-03-08T00:00:00Z",
                "completed": "2026-03-08T01:00:00Z",
            },
            "implementer": {"status": "running", "started": "2026-03-08T01:00:00Z", "completed": None},
        },
        "tested": False,
        "manualTested": False,
        "prUrl": None,
    }
    doc.update(extra)
    return doc


def build_harness(top: Path) -> Path:
    """A harness at top/case with repositories top/widgets and top/gadgets."""
    root = top / "case"
    for name in ("widgets", "gadgets"):
        make_repo(top / name, {"README.md": f"# {name}\n", "src/main.py": "print('hi')\n"})
    (root / "scripts").mkdir(parents=True)
    (root / "projects.json").write_text(
        json.dumps(
            {
                "repos": [
                    {"name": "widgets", "path": "../widgets", "remote": "git@example.invalid:w.git", "commands": {}},
                    {"name": "gadgets", "path": "../gadgets", "remote": "git@example.invalid:g.git"},
                ]
            },
            indent=2,
        )
    )
    for name, text in (
        ("task-status.sh", TASK_STATUS_SH),
        ("mark-tested.sh", MARK_TESTED_SH),
        ("mark-reviewed.sh", MARK_REVIEWED_SH),
    ):
        script = root / "scripts" / name
        script.write_text(text.replace("@ROOT@", HARDCODED_ROOT))
        script.chmod(0o755)
    tasks = root / "tasks"
    (tasks / "active").mkdir(parents=True)
    (tasks / "done").mkdir()
    (tasks / "templates").mkdir()
    (tasks / "templates" / "bug-fix.md").write_text("# {{title}}\n\n## Objective\n\nFix it.\n")
    (tasks / "task.schema.json").write_text(json.dumps(SCHEMA, indent=2))
    (tasks / "active" / "widgets-1-issue-53.task.json").write_text(
        json.dumps(task_doc("widgets-1-issue-53", "verifying", profile="standard"), indent=2) + "\n"
    )
    (tasks / "active" / "widgets-1-issue-53.md").write_text("# Issue 53\n\n## Progress Log\n")
    (tasks / "active" / "widgets-2-add-widget.task.json").write_text(
        json.dumps(task_doc("widgets-2-add-widget", "implementing"))  # compact, no newline: kept as is
    )
    (tasks / "active" / "widgets-2-add-widget.md").write_text("# Add a widget\n")
    (tasks / "done" / "widgets-3-old-fix.task.json").write_text(
        json.dumps(task_doc("widgets-3-old-fix", "merged", prUrl="https://example.invalid/pr/3"), indent=2)
    )
    (root / "AGENTS.md").write_text(f"Read {HARDCODED_ROOT}/docs/guide.md first.\n")
    (root / "docs").mkdir()
    (root / "docs" / "guide.md").write_text("Be careful.\n")
    # case is a git checkout: what it tracks is what its runs see of it.
    git("init", "-q", "-b", "main", cwd=root)
    git("add", "-A", cwd=root)
    git("commit", "-q", "-m", "the harness", cwd=root)
    return root

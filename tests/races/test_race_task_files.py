"""Task files under a writer race: readers never see a partial file, and the last word wins.

case's agents read `tasks/active/<id>.task.json` while others rewrite it. Here several
processes move one task back and forth (compare-and-set from what they read) and re-sync its
files, while a reader process parses the JSON file continuously. Every read must parse; when
the writers are done the file must equal the coordinator's document, and the `.md` Progress
Log must hold every transition exactly once.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest
from race_harness import race
from race_worker import task_service

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.adapters.taskfiles import render_task_json
from launcher.core.tasks import RepoRef
from launcher.settings import Layout

WRITERS = 6
ROUNDS = 60


@pytest.mark.slow
def test_task_file_stays_whole_under_a_writer_race(tmp_path: Path) -> None:
    root = tmp_path / "case"
    root.mkdir()
    layout = Layout(root)
    tasks = task_service(root)
    with tasks.store:
        task = tasks.create(RepoRef(name="demo", path=None), "Busy task")
    json_path = layout.tasks_dir / "active" / f"{task.id}.task.json"
    md_path = json_path.with_name(f"{task.id}.md")

    writer = {"root": str(root), "ref": task.id, "rounds": ROUNDS}
    reader = {"path": str(json_path), "task_id": task.id, "writers": WRITERS}
    outcomes = race(tmp_path / "race", [("churn", writer)] * WRITERS + [("read-json", reader)], deadline_s=120)
    for outcome in outcomes:
        assert outcome.returncode == 0, outcome.stderr[-3000:]
    reports = [o.report for o in outcomes[:WRITERS]]
    moved = sum(r["moved"] for r in reports)
    assert moved > 0
    assert sum(r["syncs"] for r in reports) > 0

    seen = outcomes[WRITERS].report
    assert seen["finished"], "the reader gave up before the writers were done"
    assert seen["bad_count"] == 0, seen["bad"]
    assert seen["reads"] > 50, seen
    # The reader really watched the file change while the writers worked.
    assert seen["statuses"] == ["active", "implementing"], seen

    with SqliteCoordinator(layout.state_db) as store:
        final = store.get_task(task.id)
        history = store.history(task.id)
    assert json_path.read_bytes() == render_task_json(final.doc)
    assert json.loads(seen["last"]) == final.doc, "the reader's last read is not the final state"

    # Every CAS that won is in the history, chained: each move starts where the last ended.
    assert len(history) == 1 + moved
    for before, after in itertools.pairwise(history):
        assert after.from_status == before.to_status
    # ... and in the Progress Log, exactly once each.
    logged = re.findall(r"^Status (\S+) → (\S+)", md_path.read_text(encoding="utf-8"), flags=re.MULTILINE)
    assert sorted(logged) == sorted((h.from_status.value, h.to_status.value) for h in history[1:])
    leftovers = [p.name for p in json_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []

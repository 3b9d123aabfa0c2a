"""The two eras of case: which a task file belongs to, its IDs, its transition table."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.core.case_layout import era_of_file, new_task_dir, parse_current_id
from launcher.core.run.judge import judge_task_changes
from launcher.core.transitions import (
    HARNESS_TRANSITIONS,
    REPO_LOCAL_TRANSITIONS,
    CaseEra,
    TaskStatus,
    check_legal,
    is_legal,
)
from launcher.errors import IllegalTransitionError

# src/commands/status.ts:6-15 of workos/case at 30b1fa1, as it reads there.
STATUS_TS = {
    "active": ["implementing"],
    "implementing": ["verifying", "active"],
    "verifying": ["reviewing", "evaluating", "closing", "implementing"],
    "reviewing": ["evaluating", "closing", "verifying"],
    "evaluating": ["closing", "implementing", "verifying", "reviewing"],
    "closing": ["pr-opened", "verifying"],
    "pr-opened": ["pr-opened", "merged"],
    "merged": [],
}


def test_the_repo_local_table_is_case_s_own_verbatim() -> None:
    assert {k.value: sorted(v.value for v in t) for k, t in REPO_LOCAL_TRANSITIONS.items()} == {
        k: sorted(v) for k, v in STATUS_TS.items()
    }


@pytest.mark.parametrize("current", list(TaskStatus))
@pytest.mark.parametrize("target", list(TaskStatus))
def test_legality_follows_the_era(current: TaskStatus, target: TaskStatus) -> None:
    in_today = target.value in STATUS_TS.get(current.value, [])
    assert is_legal(current, target, CaseEra.REPO_LOCAL) is in_today
    assert is_legal(current, target, CaseEra.HARNESS) is (target in HARNESS_TRANSITIONS[current])
    if not in_today:
        with pytest.raises(IllegalTransitionError):
            check_legal(current, target, CaseEra.REPO_LOCAL)


def test_the_eras_differ_where_case_changed() -> None:
    v, e, r = TaskStatus.VERIFYING, TaskStatus.EVALUATING, TaskStatus.REVIEWING
    assert is_legal(v, e, CaseEra.REPO_LOCAL)
    assert not is_legal(v, e, CaseEra.HARNESS)
    assert is_legal(e, r, CaseEra.REPO_LOCAL)
    assert not is_legal(e, r, CaseEra.HARNESS)
    assert not is_legal(r, TaskStatus.APPROVING, CaseEra.REPO_LOCAL)


@pytest.mark.parametrize(
    ("path", "era"),
    [
        ("/src/cli/.case/tasks/active/cli-mncbvowg-x.task.json", CaseEra.REPO_LOCAL),
        ("/src/cli/.case/tasks/done/cli-1-x.task.json", CaseEra.REPO_LOCAL),
        ("/case/tasks/active/cli-1-x.task.json", CaseEra.HARNESS),
        ("/case/.case/cli-1-x/task.json", CaseEra.HARNESS),
        (None, CaseEra.HARNESS),
    ],
)
def test_a_task_file_s_place_says_its_era(path: str | None, era: CaseEra) -> None:
    assert era_of_file(path) is era


@pytest.mark.parametrize(
    ("task_id", "repo", "slug"),
    [
        ("cli-mncbvowg-fix-broken-test", "cli", "fix-broken-test"),
        (
            "authkit-session-mncbvowg-ideation-oxfmt-oxlint-migratio",
            "authkit-session",
            "ideation-oxfmt-oxlint-migratio",
        ),
        ("cli-mncbvowg-", "cli", ""),  # a title with no [a-z0-9]: case's ID ends in '-'
        ("cli-mncbvowg-trailing-cut-", "cli", "trailing-cut-"),
        ("cli-1-auto-env-after-login", "cli", None),  # launcher's (and older case's) <repo>-<N>-<slug>
        ("cli-123456-x", "cli", None),  # all digits: a number, never a stamp
        ("widgets-mncbvowg-x", "cli", None),  # another repository's
        ("cli-MNCBVOWG-x", "cli", None),
        ("cli-mncbvowg-../x", "cli", None),
    ],
)
def test_ids_case_makes_today(task_id: str, repo: str, slug: str | None) -> None:
    assert parse_current_id(task_id, repo) == slug


def test_new_tasks_follow_the_configured_layout(tmp_path: Path) -> None:
    repo = tmp_path / "cli"
    repo.mkdir()
    assert new_task_dir("auto", str(repo)) is None
    assert new_task_dir("repo-local", str(repo)) == repo / ".case" / "tasks" / "active"
    (repo / ".case" / "tasks").mkdir(parents=True)
    assert new_task_dir("auto", str(repo)) == repo / ".case" / "tasks" / "active"
    assert new_task_dir("harness", str(repo)) is None
    assert new_task_dir("auto", None) is None


def test_an_agent_s_status_request_is_judged_by_its_era() -> None:
    snapshot = {"id": "cli-1-x", "status": "verifying", "tested": False}
    requested = {**snapshot, "status": "evaluating"}

    _, today, _ = judge_task_changes(snapshot, requested, {}, CaseEra.REPO_LOCAL)
    _, harness, report = judge_task_changes(snapshot, requested, {}, CaseEra.HARNESS)

    assert today is TaskStatus.EVALUATING
    assert harness is None
    assert report.refused == ["status: illegal transition verifying -> evaluating"]

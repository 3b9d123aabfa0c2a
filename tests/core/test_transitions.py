"""The task status table, checked against the real store and task files.

Every legal move must be accepted by the coordinator and show up in the task file and the
Progress Log; every illegal one must be refused with IllegalTransitionError naming the state
the task is in, and change nothing. Random walks through the table (hypothesis) check that
compare-and-set and the history always tell the same story.
"""

from __future__ import annotations

import itertools
import json
import re
import tempfile
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.adapters.taskfiles import TaskFiles
from launcher.core.tasks import RepoRef, TaskService
from launcher.core.transitions import (
    TASK_TRANSITIONS,
    TaskStatus,
    check_legal,
    is_legal,
    parse_status,
)
from launcher.errors import IllegalTransitionError, InvalidInputError, TransitionConflictError
from launcher.models import TaskRecord
from launcher.settings import Layout

ALL = list(TaskStatus)
PAIRS = list(itertools.product(ALL, ALL))
REPO = RepoRef(name="demo", path=None)


def open_tasks(root: Path) -> TaskService:
    layout = Layout(root)
    store = SqliteCoordinator(layout.state_db)
    return TaskService(store, TaskFiles(layout.tasks_dir, layout.locks_dir, store), actor="tester")


def path_to(status: TaskStatus) -> list[TaskStatus]:
    """The shortest legal walk from a new task (active) to ``status``."""
    queue: deque[list[TaskStatus]] = deque([[TaskStatus.ACTIVE]])
    seen = {TaskStatus.ACTIVE}
    while queue:
        walk = queue.popleft()
        if walk[-1] == status:
            return walk[1:]
        for nxt in sorted(TASK_TRANSITIONS[walk[-1]]):
            if nxt not in seen:
                seen.add(nxt)
                queue.append([*walk, nxt])
    raise AssertionError(f"{status} cannot be reached from active")


def files_of(tasks: TaskService, task: TaskRecord) -> tuple[Path, Path]:
    return tasks.files.json_path(task), tasks.files.md_path(task)


def logged_moves(md: Path) -> list[tuple[str, str]]:
    return re.findall(r"^Status (\S+) → ([a-z-]+)", md.read_text(encoding="utf-8"), flags=re.MULTILINE)


@pytest.fixture(scope="module")
def tasks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TaskService]:
    service = open_tasks(tmp_path_factory.mktemp("transitions"))
    yield service
    service.store.close()


# -- the table itself ------------------------------------------------------------------------


def test_every_status_has_a_row_and_merged_is_the_only_terminal_state() -> None:
    assert set(TASK_TRANSITIONS) == set(TaskStatus)
    assert [s for s in ALL if not TASK_TRANSITIONS[s]] == [TaskStatus.MERGED]


@pytest.mark.parametrize("status", ALL, ids=str)
def test_every_status_is_reachable_and_can_still_reach_merged(status: TaskStatus) -> None:
    walk = path_to(status)  # raises if unreachable from a new task
    assert walk[-1] == status if status != TaskStatus.ACTIVE else walk == []
    # No dead end: from anywhere, some legal walk ends in merged.
    frontier, seen = [status], {status}
    while frontier:
        frontier = [n for s in frontier for n in TASK_TRANSITIONS[s] if n not in seen]
        seen.update(frontier)
    assert TaskStatus.MERGED in seen


@given(current=st.sampled_from(ALL), target=st.sampled_from(ALL))
def test_check_legal_agrees_with_the_table(current: TaskStatus, target: TaskStatus) -> None:
    legal = target in TASK_TRANSITIONS[current]
    assert is_legal(current, target) is legal
    if legal:
        check_legal(current, target)
        return
    with pytest.raises(IllegalTransitionError) as caught:
        check_legal(current, target)
    assert caught.value.current == current.value
    assert caught.value.target == target.value
    assert f"illegal transition {current.value} -> {target.value}" in caught.value.message
    allowed = ", ".join(sorted(s.value for s in TASK_TRANSITIONS[current])) or "none"
    assert caught.value.message.endswith(f"legal targets are: {allowed}")


@given(st.text(max_size=30))
def test_unknown_status_names_are_invalid_input_listing_the_known_ones(name: str) -> None:
    if name in {s.value for s in TaskStatus}:
        assert parse_status(name).value == name
        return
    with pytest.raises(InvalidInputError) as caught:
        parse_status(name)
    assert "known statuses: active, implementing," in caught.value.message


# -- every pair against the store and the files ------------------------------------------------


@pytest.mark.parametrize(("current", "target"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
def test_each_move_is_accepted_or_refused_by_store_and_files(
    tasks: TaskService, current: TaskStatus, target: TaskStatus
) -> None:
    task = tasks.create(REPO, f"from {current} to {target}")
    for step in path_to(current):
        tasks.set_status(task.id, step.value)
    before = tasks.get(task.id)
    assert before.status == current
    json_path, md_path = files_of(tasks, before)
    history_before = tasks.history(task.id)
    json_before, md_before = json_path.read_bytes(), md_path.read_bytes()

    if is_legal(current, target):
        after = tasks.set_status(task.id, target.value, expected=current.value, reason="table test")
        assert after.status == target
        assert after.version == before.version + 1
        history = tasks.history(task.id)
        assert len(history) == len(history_before) + 1
        last = history[-1]
        assert (last.from_status, last.to_status, last.reason, last.actor) == (current, target, "table test", "tester")
        assert json.loads(json_path.read_bytes())["status"] == target.value
        assert logged_moves(md_path)[-1] == (current.value, target.value)
        assert md_path.read_text(encoding="utf-8").rstrip().endswith(f"{current.value} → {target.value}: table test")
    else:
        with pytest.raises(IllegalTransitionError) as caught:
            tasks.set_status(task.id, target.value, expected=current.value)
        assert caught.value.current == current.value
        assert f"illegal transition {current.value} -> {target.value}" in caught.value.message
        # Refused means untouched: store, history and both files.
        assert tasks.get(task.id) == before
        assert tasks.history(task.id) == history_before
        assert json_path.read_bytes() == json_before
        assert md_path.read_bytes() == md_before


@pytest.mark.parametrize("target", ALL, ids=str)
def test_merged_is_terminal(tasks: TaskService, target: TaskStatus) -> None:
    task = tasks.create(REPO, "finished work")
    for step in path_to(TaskStatus.MERGED):
        tasks.set_status(task.id, step.value)
    with pytest.raises(IllegalTransitionError) as caught:
        tasks.store.transition(task.id, TaskStatus.MERGED, target, reason=None, actor="tester")
    assert caught.value.current == "merged"
    assert caught.value.message.endswith("from merged the legal targets are: none")
    assert tasks.get(task.id).status == TaskStatus.MERGED


def test_a_stale_expectation_is_a_conflict_even_for_an_illegal_target(tasks: TaskService) -> None:
    """CAS first: a caller that expected another state learns the actual one (exit 3), whatever it asked."""
    task = tasks.create(REPO, "stale caller")
    with pytest.raises(TransitionConflictError) as caught:
        tasks.set_status(task.id, "merged", expected="pr-opened")
    assert (caught.value.actual, caught.value.expected) == ("active", "pr-opened")
    assert f"task {task.id} is active, not pr-opened" in caught.value.message
    assert [h.to_status for h in tasks.history(task.id)] == [TaskStatus.ACTIVE]


# -- random walks ----------------------------------------------------------------------------


class TransitionWalk(RuleBasedStateMachine):
    """A model of one task's status, driven through TaskService; the store must agree at every step."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory(prefix="walk-")
        self.tasks = open_tasks(Path(self.dir.name))
        self.task_id = ""
        self.status = TaskStatus.ACTIVE
        self.moves: list[tuple[TaskStatus | None, TaskStatus]] = []

    @initialize()
    def create(self) -> None:
        task = self.tasks.create(REPO, "walker")
        self.task_id = task.id
        self.moves = [(None, TaskStatus.ACTIVE)]

    @precondition(lambda self: bool(TASK_TRANSITIONS[self.status]))
    @rule(data=st.data())
    def legal_move(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(TASK_TRANSITIONS[self.status])))
        updated = self.tasks.set_status(self.task_id, target.value, expected=self.status.value)
        assert updated.status == target
        self.moves.append((self.status, target))
        self.status = target

    @precondition(lambda self: set(TaskStatus) - TASK_TRANSITIONS[self.status])
    @rule(data=st.data())
    def illegal_move(self, data: st.DataObject) -> None:
        target = data.draw(st.sampled_from(sorted(set(TaskStatus) - TASK_TRANSITIONS[self.status])))
        with pytest.raises(IllegalTransitionError) as caught:
            self.tasks.set_status(self.task_id, target.value, expected=self.status.value)
        assert caught.value.current == self.status.value

    @rule(data=st.data())
    def stale_move(self, data: st.DataObject) -> None:
        """A writer that read an older state loses the CAS and is told the actual one."""
        stale = data.draw(st.sampled_from(sorted(set(TaskStatus) - {self.status})))
        target = data.draw(st.sampled_from(ALL))
        with pytest.raises(TransitionConflictError) as caught:
            self.tasks.store.transition(self.task_id, stale, target, reason=None, actor="stale")
        assert caught.value.actual == self.status.value

    @rule()
    def resync(self) -> None:
        assert self.tasks.sync_files(self.task_id).status == self.status

    @invariant()
    def store_history_and_files_agree(self) -> None:
        if not self.task_id:
            return
        task = self.tasks.get(self.task_id)
        assert task.status == self.status
        assert task.version == len(self.moves)
        history = self.tasks.history(self.task_id)
        assert [(h.from_status, h.to_status) for h in history] == self.moves
        for before, after in itertools.pairwise(history):
            assert after.from_status == before.to_status  # a chain: no move starts from a stale state
        json_path, md_path = files_of(self.tasks, task)
        assert json.loads(json_path.read_bytes()) == task.doc
        assert task.doc["status"] == self.status.value
        assert logged_moves(md_path) == [(a.value, b.value) for a, b in self.moves[1:]]

    def teardown(self) -> None:
        self.tasks.store.close()
        self.dir.cleanup()


TransitionWalk.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_random_walks_keep_cas_and_history_in_step = TransitionWalk.TestCase

"""The run's worktree, private git dir and .case/ scope on the host, handed to the run's uid."""

from __future__ import annotations

from launcher.core.ports import RepoPort
from launcher.core.run.case_scope import data_dir_folder, is_repo_local, write_repo_local_scope
from launcher.core.run.deps import RunDeps
from launcher.core.run.request import RunPlan
from launcher.core.runlayout import PrivateGitSpec, RunPaths
from launcher.core.sparse import cone_patterns
from launcher.errors import InvalidInputError
from launcher.models import RunRecord, TaskRecord


def agent_email(holder_id: str) -> str:
    return f"{holder_id}@launcher.invalid"


def prepare_workspace(deps: RunDeps, plan: RunPlan, run: RunRecord, paths: RunPaths, uid: int, gid: int) -> None:
    ws, step = deps.workspace, deps.checkpoint
    owner_uid, owner_gid = plan.repo.owner_ids
    ws.prepare_record(paths)
    step("before:workspace")
    # Marked as launcher's as they are made: gc removes no folder without its mark.
    with deps.marks.making(paths.worktree):
        ws.prepare_worktree_dir(paths.worktree, owner_uid, owner_gid)
    plan.repo.add_worktree(paths.worktree, run.branch, plan.base_sha)
    step("after:workspace")
    with deps.marks.making(paths.sandbox):
        ws.make_sandbox(paths)
    ws.write_private_git_dir(
        paths,
        PrivateGitSpec(
            branch=run.branch,
            base_sha=plan.base_sha,
            base_branch=plan.base_branch,
            object_format=plan.repo.config_get("extensions.objectformat"),
            user_name="launcher agent",
            user_email=agent_email(run.id),
            sparse_patterns=cone_patterns(plan.sparse) if plan.sparse else None,
            shallow_file=plan.repo.git_dir / "shallow",
        ),
    )
    write_task_scope(deps, plan.task, run, paths)
    give_to_uid(deps, paths, plan.repo, uid, gid)


def read_task_files(deps: RunDeps, task: TaskRecord) -> tuple[TaskRecord, bytes, bytes | None]:
    """The task as its files are now (rendered from the coordinator first): the run's snapshot."""
    task = deps.files.sync(task.id)
    task_json, task_md = deps.files.read_copies(task)
    if task_json is None:  # sync has just written it
        raise InvalidInputError(f"task {task.id}: its file {deps.files.json_path(task)} vanished as it was written")
    return task, task_json, task_md


def record_snapshot(deps: RunDeps, run: RunRecord, task: TaskRecord) -> None:
    """What the run's task changes are judged against after it ends."""
    deps.store.update_run(run.id, details={"task_snapshot": task.doc, "task_version": task.version})


def write_task_scope(deps: RunDeps, task: TaskRecord, run: RunRecord, paths: RunPaths) -> None:
    """The run's copy of its task files and its .case/ scope, and the snapshot it is judged against."""
    ws, step = deps.workspace, deps.checkpoint
    task, task_json, task_md = read_task_files(deps, task)
    step("before:scope")
    if is_repo_local(task):
        # Today's case: the task copy lives in the worktree's .case/, beside a data dir of its own.
        ws.write_tasks_scaffold(paths, deps.tasks_dir)
        write_repo_local_scope(deps, task, run, paths, task_json, task_md)
    else:
        ws.write_tasks_view(paths, task.id, task_json, task_md, deps.tasks_dir)
        ws.write_case_scope(paths.worktree, task.id, task_json)
    step("after:scope")
    record_snapshot(deps, run, task)


def give_to_uid(deps: RunDeps, paths: RunPaths, repo: RepoPort, uid: int, gid: int) -> None:
    """Everything a run's container writes becomes its uid's (a run's, or a warm slot's)."""
    ws = deps.workspace
    for top in (paths.worktree, paths.git_dir, paths.out_dir, paths.tasks_view, paths.dotgit):
        ws.chown_tree(top, uid, gid)
    if data_dir_folder(paths).is_dir():
        ws.chown_tree(data_dir_folder(paths), uid, gid)
    # The worktree's real .git file stays the repository owner's: it is hidden from the run.
    ws.chown_tree(paths.worktree / ".git", *repo.owner_ids)

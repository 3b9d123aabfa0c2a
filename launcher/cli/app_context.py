"""One application object per CLI invocation: root, config, coordinator, output mode.

Heavy imports (pydantic models, the Docker SDK) happen inside the properties, so that
`launcher --help` stays fast.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import sys
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from launcher.adapters.git import Repository
    from launcher.adapters.projects import Projects
    from launcher.adapters.taskfiles import TaskFiles
    from launcher.core.adopt import AdoptionReport
    from launcher.core.egress import RunEgress
    from launcher.core.ports import Coordinator
    from launcher.core.repos import Repositories
    from launcher.core.run import RunDeps, RunService
    from launcher.core.run.teardown import PendingTeardowns
    from launcher.core.tasks import TaskService
    from launcher.models import CaseLayoutFound, TaskRecord
    from launcher.settings import LauncherConfig, Layout


_SAID_NO_STORE: set[str] = set()


class Application:
    # Whether this process is launcher's own (its console script, `python -m launcher`), which
    # may fork a child that outlives it; never in a caller's process (tests, Python callers).
    own_process = False

    def __init__(self, root_option: str | None, state_url: str | None) -> None:
        self._root_option = root_option
        self._state_url = state_url
        self._store: Coordinator | None = None
        self._create_store = True
        self._teardowns: PendingTeardowns | None = None

    @property
    def state_url_option(self) -> str | None:
        return self._state_url

    @cached_property
    def root(self) -> Path:
        from launcher.settings import resolve_root

        return resolve_root(self._root_option)

    @cached_property
    def config(self) -> LauncherConfig:
        from launcher.settings import load_config

        return load_config(self.root)

    @cached_property
    def layout(self) -> Layout:
        from launcher.settings import Layout

        return Layout(self.root, self.config)

    @property
    def store(self) -> Coordinator:
        if self._store is None:
            from launcher.adapters.store import empty_coordinator, open_coordinator
            from launcher.errors import NoStateStoreError

            try:
                self._store = open_coordinator(
                    self.layout.state_url(self._state_url),
                    create=self._create_store,
                    reconnect_seconds=self.layout.reconnect_seconds,
                )
            except NoStateStoreError as exc:
                # A look where nothing ever ran: answer from an empty store, say why (once per
                # process: `launcher web` opens one per request), make nothing.
                if exc.message not in _SAID_NO_STORE:
                    _SAID_NO_STORE.add(exc.message)
                    typer.echo(f"launcher: {exc.message}; nothing was created here", err=True)
                self._store = empty_coordinator()
        return self._store

    def read_only(self) -> Application:
        """For commands that only look (ps, logs, task list/show, matrix, pool ls, gc --dry-run):
        where no state store exists they see an empty one and create nothing under the root."""
        self._create_store = False
        return self

    @cached_property
    def task_files(self) -> TaskFiles:
        from launcher.adapters.taskfiles import TaskFiles, schema_validator

        tasks_dir = self.layout.tasks_dir
        return TaskFiles(
            tasks_dir,
            self.layout.locks_dir,
            self.store,
            schema_validator(tasks_dir),
            repo_local_dir=self.repo_local_tasks_dir,
        )

    def repo_local_tasks_dir(self, task: TaskRecord) -> Path | None:
        """Where today's case keeps a new task of ``task``'s repository, by [case].layout."""
        from launcher.core.case_layout import new_task_dir

        return new_task_dir(self.config.case.layout, task.repo_path)

    @cached_property
    def case_data_dir(self) -> Path | None:
        from launcher.adapters.projects import case_data_dir

        return case_data_dir(self.config.case.data_dir, os.environ)

    @cached_property
    def tasks(self) -> TaskService:
        from launcher.core.tasks import TaskService

        return TaskService(self.store, self.task_files, actor=self.actor)

    @cached_property
    def runs(self) -> RunService:
        from launcher.core.run import RunService

        return RunService(self.run_deps(self.store))

    def run_deps(self, store: Coordinator) -> RunDeps:
        """What runs on ``store`` are made with; batch workers each pass a connection of their own."""
        from launcher.adapters.ca_bundle import CaFiles
        from launcher.adapters.case_state import CaseStateFiles
        from launcher.adapters.docker import entry_script_path, install_entry_script
        from launcher.adapters.docker.image_builder import DockerImageBuilder
        from launcher.adapters.docker.sandbox import DockerSandbox
        from launcher.adapters.faults import fault_point
        from launcher.adapters.folder_marks import FolderMarks, MarkedWorkspace
        from launcher.adapters.git_publish import GitPublisher
        from launcher.adapters.harness_view import HarnessView
        from launcher.adapters.poolslots import PoolSlots
        from launcher.adapters.taskfiles import TaskFiles, schema_validator
        from launcher.core.run import RunDeps

        layout = self.layout
        files = TaskFiles(
            layout.tasks_dir,
            layout.locks_dir,
            store,
            schema_validator(layout.tasks_dir),
            repo_local_dir=self.repo_local_tasks_dir,
        )
        from launcher.adapters.teardown_locks import TeardownLocks

        sandbox = DockerSandbox()
        marks = FolderMarks(layout.marks_dir)
        return RunDeps(
            store=store,
            files=files,
            sandbox=sandbox,
            workspace=MarkedWorkspace(marks),
            open_repo=self.open_repo,
            root=self.root,
            state_dir=layout.state_dir,
            worktrees_dir=layout.worktrees_dir,
            tasks_dir=layout.tasks_dir,
            defaults=self.config.run,
            entry_script=install_entry_script(layout.state_dir)
            if self._create_store
            else entry_script_path(layout.state_dir),
            harness=HarnessView(self.root, layout.locks_dir),
            actor=self.actor,
            projects_view=self.projects.run_view,
            checkpoint=fault_point,
            locate_repo=self.repositories.locate,
            network=self.config.network,
            publish=self.config.publish,
            publisher=GitPublisher(),
            egress=self.make_egress(store, lambda: sandbox.client),
            pool=PoolSlots(layout.state_dir / "pool", layout.worktrees_dir),
            marks=marks,
            trust=CaFiles(),
            image_builder=DockerImageBuilder(
                layout.state_dir / "image-checks",
                root=self.root,
                connect=lambda: sandbox.client,
                progress=lambda line: print(line, file=sys.stderr),
            ),
            sidecars=sandbox,
            case_state=CaseStateFiles(),
            case_data_dir=self.case_data_dir,
            project_entry=self.projects.entry,
            teardown_locks=TeardownLocks(layout.teardown_dir),
        )

    def defer_teardowns(self) -> None:
        """`launcher run`: what a settled run no longer needs is removed after the result is
        printed, by a child process this one forks as it ends ([run] defer_teardown)."""
        if not (self.own_process and self.config.run.defer_teardown and hasattr(os, "fork")):
            return
        from launcher.core.run.teardown import PendingTeardowns

        self._teardowns = self.runs.deps.teardowns = PendingTeardowns()

    def _finish_teardowns(self) -> None:
        pending = self._teardowns.take() if self._teardowns is not None else []
        if not pending:
            return
        from launcher.adapters.detached import run_in_child
        from launcher.core.run.teardown import take_apart

        # Closed before the fork: an SQLite connection must never cross one. The child opens
        # its own coordinator connection and engine client.
        if self._store is not None:
            self._store.close()
            self._store = None

        def in_child() -> None:
            deps = self.run_deps(self.store)
            for teardown in pending:
                take_apart(deps, teardown)

        if run_in_child(in_child) is not None:  # this process exits next: nobody need reap the child
            for teardown in pending:
                teardown.hold.hand_over()
            return
        deps = self.run_deps(self.store)  # no fork to be had: done here, then
        for teardown in pending:
            take_apart(deps, teardown)

    def open_repo(self, path: str) -> Repository:
        from launcher.adapters.git import Repository

        return Repository.open(path, lock_dir=self.layout.locks_dir)

    @cached_property
    def repositories(self) -> Repositories:
        from launcher.adapters.clone_cache import CloneCache
        from launcher.core.repos import Repositories

        layout = self.layout
        clones = CloneCache(layout.clones_dir, layout.locks_dir)
        return Repositories(self.projects, self.open_repo, configured=self.config.repos, root=self.root, clones=clones)

    def make_egress(self, store: Coordinator, docker: Callable[[], Any]) -> RunEgress:
        from launcher.adapters.docker import egress_proxy_path, egress_proxy_sha256, install_egress_proxy
        from launcher.adapters.docker.egress import DockerEgress, EgressFiles, ProxySettings
        from launcher.core import labels, uids
        from launcher.core.egress import RunEgress
        from launcher.core.netpolicy import check_allow_private
        from launcher.core.subnets import SubnetPool

        layout, net = self.layout, self.config.network
        # Refused here, before any run: a bad range is a configuration error (exit 6).
        private_allowed = [str(n) for n in check_allow_private(net.allow_private, subnet_pool=net.subnet_pool)]
        proxy_ids = uids.proxy_ids(self.config.run)
        # A read-only command installs nothing; it never starts a proxy either.
        program = install_egress_proxy(layout.state_dir) if self._create_store else egress_proxy_path(layout.state_dir)
        policies, logs = layout.egress_dir / "policies", layout.egress_dir / "logs"
        settings = ProxySettings.of(
            net,
            root=self.root,
            name=f"launcher-egress-{labels.root_tag(self.root)}",
            egress_network=net.egress_network,
            ids=proxy_ids,
            program=program,
            program_sha256=egress_proxy_sha256(program),
            policies=policies,
            logs=logs,
            private_allowed=private_allowed,
        )
        return RunEgress(
            store,
            DockerEgress(settings, layout.locks_dir / "egress-proxy.lock", docker),
            EgressFiles(policies, logs, proxy_ids),
            SubnetPool(net.subnet_pool),
            root=self.root,
            root_tag=labels.root_tag(self.root),
            spares=net.spare_networks,
        )

    @cached_property
    def projects(self) -> Projects:
        from launcher.adapters.projects import Projects

        return Projects.load(self.root, self.case_data_dir)

    def case_layouts(self) -> list[CaseLayoutFound]:
        """Which layouts of case hold task files under this root and in its repositories."""
        from launcher.adapters import harness

        projects = self.projects
        repos = {name: path for name in projects.names if (path := projects.path_of(name)).is_dir()}
        return harness.layouts_found(self.layout.tasks_dir, repos)

    def reconcile(self, *, full: bool) -> AdoptionReport:
        """Adopt task files launcher has not seen; with ``full``, also import hand edits."""
        from launcher.adapters import harness
        from launcher.core.adopt import Adopter
        from launcher.errors import LauncherError

        projects = self.projects
        repo_paths = [p for p in (projects.path_of(n) for n in projects.names) if p.is_dir()]
        dirs = harness.task_dirs(self.layout.tasks_dir, repo_paths)
        known = frozenset() if full else frozenset(self.store.task_file_paths())
        found, legacy = harness.scan(dirs, None if full else set(known))

        def repo_path_of(name: str) -> str | None:
            return str(projects.path_of(name)) if name in projects.names else None

        urls: dict[str, str | None] = {}

        def repo_url_of(name: str) -> str | None:
            path = repo_path_of(name)
            if path is None or not Path(path).is_dir():
                return None
            if name not in urls:
                try:
                    urls[name] = self.repositories.url_of(self.open_repo(path).toplevel)
                except LauncherError:
                    urls[name] = None  # not a repository (yet): the task still adopts, by name only
            return urls[name]

        adopter = Adopter(
            self.store,
            self.task_files,
            repo_path_of,
            harness.read_md_title,
            base_ref=self.config.run.base_ref,
            repo_url_of=repo_url_of,
        )
        return adopter.reconcile(found, legacy, full=full, known_paths=known)

    def create_task(self, repo: str, title: str, *, base_ref: str | None = None, **options: Any) -> TaskRecord:
        """A new task in the repository ``repo`` names, starting from ``base_ref`` ([run].base_ref by default)."""
        repo_ref = self.repositories.resolve(repo)
        base = base_ref or self.config.run.base_ref
        self.repositories.check_base(repo_ref, base)
        # Numbers continue after any task file the harness gained outside launcher.
        self.reconcile(full=False)
        return self.tasks.create(repo_ref, title, base_ref=base, **options)

    @cached_property
    def actor(self) -> str:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = str(os.getuid())
        return f"{user}@{socket.gethostname()}"

    def close(self) -> None:
        try:
            self._finish_teardowns()
        finally:
            if self._store is not None:
                self._store.close()
                self._store = None


def app_of(ctx: typer.Context) -> Application:
    obj = ctx.find_root().obj
    if not isinstance(obj, Application):  # pragma: no cover - set by the root callback
        raise RuntimeError("launcher CLI context is missing")
    return obj


def emit_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def dump(model: Any) -> Any:
    """A pydantic model (or list of them) as JSON-ready data."""
    if isinstance(model, list):
        return [dump(m) for m in model]
    return model.model_dump(mode="json")


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    return "\n".join(lines)

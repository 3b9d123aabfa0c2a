"""Stand-ins for the ports, for fast tests of the run service's decisions (no Docker, no git).

What is real: the SQLite coordinator on tmp_path, the task files, the folders under tmp_path.
What is not: the sandbox (a script plays the agent), the repository (refs in a dict; a "bundle"
is a JSON file naming its tip), and the workspace's ownership changes. Anything that touches
Docker or git for real is tested against them elsewhere (tests/runs, tests/security, …); these
only decide faster whether the service does the right thing with what the ports answer.

    world = FakeWorld.make(tmp_path)
    world.sandbox.agent = lambda spec, out: (0, b"hello\\n")   # what the "agent" does
    run = world.run_task()                                      # plan, claim, execute
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from launcher.adapters.folder_marks import FolderMarks
from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.adapters.taskfiles import TaskFiles
from launcher.adapters.workspace import LocalWorkspace
from launcher.core.run import RunDeps, RunRequest, RunService
from launcher.core.runlayout import CONTAINER_OUT, RunPaths
from launcher.core.tasks import RepoRef, TaskService
from launcher.errors import DockerError, GitError, ImageNotFoundError, LauncherError
from launcher.models import ContainerInfo, RunOwner, RunRecord, SandboxSpec
from launcher.settings import RunDefaults

BASE = "b" * 40
IMAGE_ID = "sha256:" + "f" * 64
# What the fake agent does in its container: given its spec and its out/ folder on the host,
# return (exit code or None for "still running at the deadline", its output).
Agent = Callable[[SandboxSpec, Path], tuple[int | None, bytes]]


def commit_bundle(out: Path, tip: str, *, heads: tuple[str, ...] = ("HEAD",), parent: str = BASE) -> None:
    """What a fake agent's entry writes: a "bundle" FakeRepo understands."""
    (out / "run.bundle").write_text(json.dumps({"heads": list(heads), "tip": tip, "parent": parent}))


@dataclass
class FakeContainer:
    spec: SandboxSpec
    running: bool = False
    exit_code: int | None = None
    output: bytes = b""
    killed: bool = False
    oom: bool = False
    # Set once it has run (start) or can no longer (kill, stop, remove): its live stream waits for it.
    settled: threading.Event = field(default_factory=threading.Event)


class FakeSandbox:
    """The Sandbox port in memory. ``fail`` names calls that raise (a DockerError by default)."""

    def __init__(self) -> None:
        self.containers: dict[str, FakeContainer] = {}
        self.images = {"launcher/agent-base:latest": IMAGE_ID}
        self.agent: Agent = lambda _spec, _out: (0, b"")
        self.fail: dict[str, LauncherError] = {}
        self.calls: list[str] = []
        self._next = 0
        # The output streams (see attach and logs); stops asked for, as (container, grace).
        self.chunk = 1 << 16
        self.stream_cut: int | None = None
        self.stream_error: Exception | None = None
        self.engine_keeps: int | None = None
        self.stops: list[tuple[str, float]] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    def image_id(self, ref: str) -> str:
        self._call("image_id")
        if ref not in self.images:
            raise ImageNotFoundError(f"image {ref!r} is not in the local Docker engine")
        return self.images[ref]

    def create(self, spec: SandboxSpec) -> str:
        self._call("create")
        self._next += 1
        container_id = f"c{self._next:063d}"
        self.containers[container_id] = FakeContainer(spec)
        return container_id

    def start(self, container_id: str) -> None:
        self._call("start")
        container = self.containers[container_id]
        out = next(Path(m.source) for m in container.spec.mounts if m.target == CONTAINER_OUT and m.source)
        container.exit_code, container.output = self.agent(container.spec, out)
        if container.spec.env.get("LAUNCHER_PHASE") == "harvest" and container.exit_code is None:
            container.exit_code = 0  # a harvest container runs only the entry's capture, which ends
        container.running = container.exit_code is None
        if not container.running and not (out / "capture").exists():
            # What the real entry writes last, once the agent has ended: its capture is complete.
            (out / "capture").write_text("ok\n")
        container.settled.set()

    def attach(self, container_id: str) -> Iterator[bytes]:
        self._call("attach")
        return self._live(self.containers[container_id])

    def _live(self, container: FakeContainer) -> Iterator[bytes]:
        # What the live stream delivers: the output (as it runs: start() made it), in
        # ``chunk`` pieces, cut short after ``stream_cut`` bytes (raising ``stream_error``).
        container.settled.wait(30)
        output = container.output
        cut = len(output) if self.stream_cut is None else self.stream_cut
        for at in range(0, cut, self.chunk):
            yield output[at : min(at + self.chunk, cut)]
        if self.stream_error is not None:
            raise self.stream_error

    def logs(self, container_id: str) -> Iterator[bytes]:
        """The engine's copy: all of it, or only its last ``engine_keeps`` bytes (rotated)."""
        self._call("logs")
        output = self.containers[container_id].output
        yield output if self.engine_keeps is None else output[-self.engine_keeps :]

    def wait(self, container_id: str, timeout: float | None) -> int | None:
        self._call("wait")
        container = self.containers[container_id]
        if container.running and not container.killed:
            return None  # the deadline passed first
        return container.exit_code if container.exit_code is not None else 137

    def kill(self, container_id: str) -> None:
        self._call("kill")
        if container_id in self.containers:
            self.containers[container_id].killed = True
            self.containers[container_id].running = False
            self.containers[container_id].settled.set()

    def stop(self, container_id: str, grace: float) -> None:
        self._call("stop")
        self.stops.append((container_id, grace))
        if container_id in self.containers:
            self.containers[container_id].killed = True
            self.containers[container_id].running = False
            self.containers[container_id].settled.set()

    def remove(self, container_id: str) -> None:
        self._call("remove")
        removed = self.containers.pop(container_id, None)
        if removed is not None:
            removed.settled.set()

    def inspect_state(self, container_id: str) -> dict[str, Any] | None:
        container = self.containers.get(container_id)
        if container is None:
            return None
        return {"Running": container.running, "OOMKilled": container.oom}

    def list(self, labels: dict[str, str]) -> list[ContainerInfo]:
        return [
            ContainerInfo(id=cid, name=c.spec.name, status="running" if c.running else "exited", labels=c.spec.labels)
            for cid, c in self.containers.items()
            if all(c.spec.labels.get(k) == v for k, v in labels.items())
        ]

    def wait_for_output(self, container_id: str, marker: bytes, timeout: float) -> None:
        if marker not in self.containers[container_id].output:
            raise DockerError(f"container {container_id[:12]} not ready")


class FakeRepo:
    """A repository as refs in a dict. Commits are names; each knows its parent."""

    def __init__(self, top: Path) -> None:
        self.toplevel = top
        self.git_dir = top / ".git"
        (self.git_dir / "objects").mkdir(parents=True)
        self.refs: dict[str, str] = {"refs/heads/main": BASE}
        self.parents: dict[str, str] = {}
        self.fail: dict[str, LauncherError] = {}
        self.calls: list[str] = []

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    @property
    def objects_dir(self) -> Path:
        return self.git_dir / "objects"

    @property
    def owner_ids(self) -> tuple[int, int]:
        return 1000, 1000

    def resolve_commit(self, ref: str) -> str:
        return self.refs.get(f"refs/heads/{ref}", BASE) if ref != "HEAD" else self.refs["refs/heads/main"]

    def is_folder(self, commit: str, path: str) -> bool:
        return True

    def symbolic_branch(self, ref: str) -> str | None:
        return "main" if ref == "HEAD" else None

    def config_get(self, key: str) -> str | None:
        return None

    def add_worktree(self, path: Path, branch: str, base_sha: str) -> None:
        self._call("add_worktree")
        if f"refs/heads/{branch}" in self.refs:
            raise GitError(f"branch {branch} already exists; run branches are never reused")
        self.refs[f"refs/heads/{branch}"] = base_sha

    def remove_worktree(self, path: Path) -> None:
        self._call("remove_worktree")

    def add_detached_worktree(self, path: Path, base_sha: str) -> None:
        self._call("add_detached_worktree")

    def adopt_worktree(self, source: Path, path: Path, branch: str, base_sha: str) -> None:
        self._call("adopt_worktree")
        source.rename(path)
        self.refs[f"refs/heads/{branch}"] = base_sha

    def worktree_admin(self, path: Path) -> Path | None:
        return None

    def retire_worktree(self, path: Path, trash: Path) -> None:
        self._call("retire_worktree")
        if path.exists():
            path.rename(trash)
        self.prune_worktrees()

    def prune_worktrees(self) -> None:
        self._call("prune_worktrees")

    def worktree_paths(self) -> list[str]:
        return [str(self.toplevel)]

    def verify_bundle(self, bundle: Path) -> list[tuple[str, str]]:
        self._call("verify_bundle")
        data = json.loads(bundle.read_text())
        self.parents[data["tip"]] = data["parent"]
        return [(data["tip"], head) for head in data["heads"]]

    def fetch_bundle(self, bundle: Path, refspecs: list[str]) -> None:
        """Every head of the "bundle" lands where a refspec maps it, all at the bundle's tip."""
        self._call("fetch_bundle")
        data = json.loads(bundle.read_text())
        for head in data["heads"]:
            for spec in refspecs:
                src, _, dst = spec.lstrip("+").partition(":")
                if src == head:
                    self.refs[dst] = data["tip"]
                elif src.endswith("*") and head.startswith(src[:-1]):
                    self.refs[dst[:-1] + head[len(src) - 1 :]] = data["tip"]

    def refs_under(self, prefix: str) -> dict[str, str]:
        return {ref: sha for ref, sha in self.refs.items() if ref.startswith(prefix)}

    def check_ref_format(self, branch: str) -> bool:
        return bool(branch) and " " not in branch

    def update_ref(self, ref: str, new: str, old: str) -> None:
        self._call("update_ref")
        if self.refs.get(ref) != (None if old.strip("0") == "" else old):  # all zeros: must not exist yet
            raise GitError(f"cannot lock ref '{ref}': is at {self.refs.get(ref)} but expected {old}")
        self.refs[ref] = new

    def ref_value(self, ref: str) -> str | None:
        return self.refs.get(ref)

    def delete_ref(self, ref: str) -> None:
        self.refs.pop(ref, None)

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        at: str | None = descendant
        while at is not None:
            if at == ancestor:
                return True
            at = self.parents.get(at)
        return False

    def commits_between(self, base: str, tip: str) -> list[dict[str, str]]:
        found, at = [], tip
        while at != base and at in self.parents:
            found.append({"sha": at, "subject": f"commit {at[:7]}"})
            at = self.parents[at]
        return found

    def diff_summary(self, base: str, tip: str) -> dict[str, object]:
        changed = len(self.commits_between(base, tip))
        return {"files_changed": changed, "insertions": changed, "deletions": 0, "files": ["f.txt"] * changed}

    def rewrite_without(self, base: str, tip: str, name: str) -> tuple[str, dict[str, str]]:
        self._call("rewrite_without")
        return tip, {}

    def tree_with_entry_of(self, commit: str, name: str, like: str) -> str:
        return f"tree-of-{commit}"

    def check_out_worktree(self, path: Path, branch: str) -> None:
        self._call("check_out_worktree")
        path.mkdir(parents=True, exist_ok=True)

    def apply_tree(self, path: Path, tree: str) -> None:
        self._call("apply_tree")


class FakeHarness:
    """The harness view: records what a run was given; makes the folder and its mount points."""

    def __init__(self, files: dict[str, bytes] | None = None) -> None:
        self.files = files or {}
        self.exports: list[Path] = []

    def export(self, dest: Path, keep: Callable[[str], bool], mount_points: Mapping[str, str]) -> bool:
        self.exports.append(dest)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, data in self.files.items():
            if keep(rel):
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                (dest / rel).write_bytes(data)
        for rel, kind in mount_points.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            if kind == "dir":
                (dest / rel).mkdir(exist_ok=True)
            else:
                (dest / rel).touch()
        return True


class FakeWorkspace(LocalWorkspace):
    """The real folder work under tmp_path, without handing anything to other uids; ``fail``
    names steps that raise (an OSError by default, as a full disk would)."""

    def __init__(self) -> None:
        self.fail: dict[str, BaseException] = {}
        self.calls: list[str] = []

    def _step(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail.pop(name)

    def chown_tree(self, top: Path, uid: int, gid: int) -> None:
        self._step("chown_tree")

    def prepare_worktree_dir(self, worktree: Path, owner_uid: int, owner_gid: int) -> None:
        self._step("prepare_worktree_dir")
        worktree.mkdir(parents=True)

    def write_private_git_dir(self, paths: RunPaths, spec: Any) -> None:
        self._step("write_private_git_dir")
        super().write_private_git_dir(paths, spec)

    def remove_tree(self, path: Path) -> None:
        self._step("remove_tree")
        super().remove_tree(path)


@dataclass
class FakeWorld:
    """A case root on tmp_path whose runs execute in the fakes."""

    root: Path
    store: SqliteCoordinator
    sandbox: FakeSandbox
    repo: FakeRepo
    workspace: FakeWorkspace
    deps: RunDeps
    service: RunService
    steps: list[str] = field(default_factory=list)

    @classmethod
    def make(cls, tmp_path: Path, **defaults: Any) -> FakeWorld:
        root = tmp_path / "case"
        (root / "tasks" / "active").mkdir(parents=True)
        state = root / ".launcher"
        store = SqliteCoordinator(state / "state.db")
        sandbox, repo, workspace = FakeSandbox(), FakeRepo(tmp_path / "repo"), FakeWorkspace()
        steps: list[str] = []
        deps = RunDeps(
            store=store,
            files=TaskFiles(root / "tasks", state / "locks", store),
            sandbox=sandbox,
            workspace=workspace,
            open_repo=lambda _path: repo,
            root=root,
            state_dir=state,
            worktrees_dir=state / "worktrees",
            tasks_dir=root / "tasks",
            defaults=RunDefaults(**defaults),
            entry_script=state / "bin" / "entry.sh",
            harness=FakeHarness(),
            checkpoint=steps.append,
            marks=FolderMarks(state / "marks"),
        )
        return cls(root, store, sandbox, repo, workspace, deps, RunService(deps), steps)

    def new_task(self, title: str = "fix it", command: tuple[str, ...] = ("./agent.sh",)) -> str:
        tasks = TaskService(self.store, self.deps.files)
        return tasks.create(RepoRef(name="demo", path=str(self.repo.toplevel)), title, command=list(command)).id

    def run_task(self, task_id: str | None = None, **request: Any) -> RunRecord:
        plan = self.service.plan(
            RunRequest(task=task_id or self.new_task(), network="none", **request), host_environ={}
        )
        run = self.service.create(plan, RunOwner(host="test", pid=1))
        return self.service.execute(plan, run)

    def close(self) -> None:
        self.store.close()

"""A run's folders on the host, and what the run's container is allowed to see of them.

    <worktrees>/<run-id>/            the run's git worktree (owned by the run's uid while it runs)
    .launcher/sandboxes/<run-id>/    mounted into the run: private git dir, out/, tasks view
    .launcher/runs/<run-id>/         host only: the log, the harvested bundle

The private git dir has its own HEAD, index, refs and config, and reaches the shared object
store only as a read-only alternate, so a run can move its own branch and nothing else.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from launcher.adapters.disk import free_bytes, size_bytes, tree_bytes
from launcher.adapters.safe_io import (
    OverCapError,
    atomic_write,
    copy_untrusted,
    open_untrusted,
    read_untrusted_in,
    take_untrusted,
)
from launcher.core.runlayout import CONTAINER_GIT_DIR, CONTAINER_OBJECTS, PrivateGitSpec, RunPaths
from launcher.errors import BundleOverCapError, HostStorageError, LauncherError, NotFoundError

# The entry's word on its capture (docker/entry.sh writes it last, in out/): "ok", or a few
# lines on what it could not keep.
CAPTURE_FILE = "capture"
CAPTURE_MAX_BYTES = 64 * 1024


def prepare_record(paths: RunPaths) -> None:
    paths.record.mkdir(parents=True, exist_ok=True)
    # Readable by the repository owner's git (which imports the bundle), writable by the host only.
    os.chmod(paths.record, 0o755)  # noqa: S103 - the owner's git reads the bundle copy here


def prepare_worktree_dir(worktree: Path, owner_uid: int, owner_gid: int) -> None:
    """An empty folder that git (running as the repository owner) may turn into a worktree."""
    worktree.parent.mkdir(parents=True, exist_ok=True)
    worktree.mkdir()
    if os.geteuid() == 0:
        os.chown(worktree, owner_uid, owner_gid)


def write_private_git_dir(paths: RunPaths, spec: PrivateGitSpec) -> None:
    git_dir = paths.git_dir
    (git_dir / "objects" / "info").mkdir(parents=True)
    (git_dir / "info").mkdir()
    (git_dir / "refs" / "tags").mkdir(parents=True)
    _write_identity(git_dir, spec)
    (git_dir / "objects" / "info" / "alternates").write_text(CONTAINER_OBJECTS + "\n")
    # .case/ at the top is the run's scope for markers; it never belongs in the agent's commits.
    # Anchored: a .case folder deeper down is the agent's work like any other.
    (git_dir / "info" / "exclude").write_text("/.case/\n")
    if spec.sparse_patterns is not None:
        # Read by the checkout in the container: files outside the cone stay in the index only.
        (git_dir / "info" / "sparse-checkout").write_text(spec.sparse_patterns)
    shallow = spec.shallow_file
    if shallow is not None and shallow.is_file() and not shallow.is_symlink():
        # A shallow clone: without its list of cut-off commits, `git log` in the run fails on
        # the first parent the object store never had.
        shutil.copyfile(shallow, git_dir / "shallow")
    paths.dotgit.write_text(f"gitdir: {CONTAINER_GIT_DIR}\n")
    paths.out_dir.mkdir()


def _write_identity(git_dir: Path, spec: PrivateGitSpec) -> None:
    _write_ref(git_dir, f"refs/heads/{spec.branch}", spec.base_sha)
    if spec.base_branch and spec.base_branch != spec.branch:
        # Agents diff against the base branch (case's agents use `main`): give them a copy.
        _write_ref(git_dir, f"refs/heads/{spec.base_branch}", spec.base_sha)
    (git_dir / "HEAD").write_text(f"ref: refs/heads/{spec.branch}\n")
    version = 1 if spec.object_format and spec.object_format != "sha1" else 0
    config = [
        "[core]",
        f"\trepositoryformatversion = {version}",
        "\tfilemode = true",
        "\tbare = false",
        "\tlogallrefupdates = true",
        *(["\tsparseCheckout = true", "\tsparseCheckoutCone = true"] if spec.sparse_patterns is not None else []),
        "[user]",
        f"\tname = {spec.user_name}",
        f"\temail = {spec.user_email}",
        "[gc]",
        "\tauto = 0",
    ]
    if version:
        config += ["[extensions]", f"\tobjectformat = {spec.object_format}"]
    (git_dir / "config").write_text("\n".join(config) + "\n")


def _write_ref(git_dir: Path, ref: str, sha: str) -> None:
    target = git_dir / ref
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(sha + "\n")


def write_tasks_view(
    paths: RunPaths, task_id: str, task_json: bytes, task_md: bytes | None, harness_tasks: Path
) -> None:
    """The run's own copy of its task files, mounted where case's scripts look for them."""
    active = paths.tasks_view / "active"
    active.mkdir(parents=True)
    atomic_write(active / f"{task_id}.task.json", task_json)
    if task_md is not None:
        atomic_write(active / f"{task_id}.md", task_md)
    write_tasks_scaffold(paths, harness_tasks)


def write_tasks_scaffold(paths: RunPaths, harness_tasks: Path) -> None:
    """What every run's task view holds besides its own task: the schema and the templates."""
    paths.tasks_view.mkdir(exist_ok=True)
    schema = harness_tasks / "task.schema.json"
    if schema.is_file() and not schema.is_symlink():
        shutil.copyfile(schema, paths.tasks_view / "task.schema.json")
    templates = harness_tasks / "templates"
    if templates.is_dir() and not templates.is_symlink():
        shutil.copytree(templates, paths.tasks_view / "templates", symlinks=True)


def write_case_scope(worktree: Path, task_id: str, task_json: bytes) -> None:
    """`.case/active` and `.case/<task-id>/` inside the run's own worktree, never the main checkout."""
    scope = worktree / ".case"
    (scope / task_id).mkdir(parents=True)
    (scope / "active").write_text(task_id + "\n")
    (scope / task_id / "task.json").write_bytes(task_json)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """chown without following symlinks, so a link an agent planted cannot redirect it."""
    if os.geteuid() != 0:
        return
    os.lchown(top, uid, gid)
    for dirpath, dirnames, filenames in os.walk(top, followlinks=False):
        for name in dirnames + filenames:
            os.lchown(os.path.join(dirpath, name), uid, gid)


def remove_tree(path: Path) -> None:
    """Remove a folder an agent wrote into. rmtree never follows symlinks out of it."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        if path.is_symlink() or not stat.S_ISDIR(path.lstat().st_mode):
            path.unlink()
            return
        # Another remover (gc, a drain) may be deleting the same folder: what is gone is fine.
        shutil.rmtree(path, onerror=_gone_is_fine)
    except FileNotFoundError:
        return


def _gone_is_fine(_function: object, _path: str, excinfo: tuple[type[BaseException], BaseException, object]) -> None:
    if not isinstance(excinfo[1], FileNotFoundError):
        raise excinfo[1]


def keep_bundle(paths: RunPaths, *, max_bytes: int, source: Path | None = None) -> Path | None:
    """The run's bundle (or ``source``) in the host-only record folder; None when there is none.

    Copied in bounded chunks, checked as hostile input on the way. One over ``max_bytes`` is
    still kept, moved rather than copied (it is on this disk already), and refused with
    ``BundleOverCapError`` naming where it is: nothing a run made is deleted for being big.
    A bundle a previous settle kept is found again when the run's copy is gone.
    """
    kept = paths.harvested_bundle
    given = source if source is not None else paths.bundle
    if given == kept:
        return _checked_in_place(kept, max_bytes=max_bytes)
    if source is not None:
        # Beside the run's own, which stays as it was.
        kept = paths.record / "import.bundle"
    if not given.exists() and not given.is_symlink():
        if source is None and (kept.exists() or kept.is_symlink()):
            return _checked_in_place(kept, max_bytes=max_bytes)
        if source is not None:
            raise NotFoundError(f"no bundle at {given}")
        return None
    try:
        copy_untrusted(given, kept, max_bytes=max_bytes)
    except OverCapError as exc:
        if source is None:
            # The run's own copy: on the same disk as the record, so a rename costs nothing.
            take_untrusted(given, kept)
            raise BundleOverCapError(str(exc), kept=kept, size=exc.size, max_bytes=max_bytes) from exc
        raise BundleOverCapError(str(exc), kept=None, size=exc.size, max_bytes=max_bytes) from exc
    return kept


def _checked_in_place(path: Path, *, max_bytes: int) -> Path:
    fd, info = open_untrusted(path, single_link=True)
    os.close(fd)
    if info.st_size > max_bytes:
        raise BundleOverCapError(
            f"{path} is {info.st_size} bytes, over the {max_bytes}-byte cap",
            kept=path,
            size=info.st_size,
            max_bytes=max_bytes,
        )
    return path


def read_capture(paths: RunPaths) -> str | None:
    """What the run's entry said of its capture (``ok``, or what it could not keep); None: nothing."""
    raw = read_untrusted_in(paths.out_dir, [CAPTURE_FILE], max_bytes=CAPTURE_MAX_BYTES)
    if raw is None:
        return None
    return raw.decode("utf-8", "replace").strip()


def keep_sandbox(paths: RunPaths) -> Path:
    """Move the run's sandbox (its private git dir: objects no bundle carried) into its record.

    A rename inside launcher's state folder: the agent's files, as they are, still its uid's,
    where no run is mounted and gc does not look.
    """
    target = paths.record / "sandbox"
    os.rename(paths.sandbox, target)
    return target


def make_sandbox(paths: RunPaths) -> None:
    """The run's host-side folder for what its container is given (not yet any of it)."""
    paths.sandbox.mkdir(parents=True)


def write_file(path: Path, data: bytes) -> None:
    """A file in a folder only the host writes (the run's sandbox folder): resolv.conf, projects.json."""
    atomic_write(path, data, mode=0o644)


def write_secrets(folder: Path, values: dict[str, bytes], uid: int, gid: int) -> None:
    """One file per secret for the run's uid alone; the folder is new, so nothing can be in its way."""
    folder.mkdir(mode=0o700)
    for name, data in values.items():
        fd = os.open(folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        try:
            if os.geteuid() == 0:
                os.fchown(fd, uid, gid)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
    if os.geteuid() == 0:
        os.chown(folder, uid, gid)


@contextmanager
def _on_host(what: str) -> Iterator[None]:
    """A failing disk (full, read-only, no permission) as a launcher error, not a traceback."""
    try:
        yield
    except LauncherError:
        raise
    except OSError as exc:
        raise HostStorageError.of(exc, what) from exc


class LocalWorkspace:
    """WorkspacePort on the local file system."""

    def disk_usage(self, tops: list[Path]) -> int:
        return tree_bytes(tops)

    def free_space(self, path: Path) -> int:
        return free_bytes(path)

    def disk_size(self, path: Path) -> int:
        return size_bytes(path)

    def prepare_record(self, paths: RunPaths) -> None:
        with _on_host("prepare the run's record folder"):
            prepare_record(paths)

    def prepare_worktree_dir(self, worktree: Path, owner_uid: int, owner_gid: int) -> None:
        with _on_host("prepare the run's worktree folder"):
            prepare_worktree_dir(worktree, owner_uid, owner_gid)

    def make_sandbox(self, paths: RunPaths) -> None:
        with _on_host("prepare the run's sandbox folder"):
            make_sandbox(paths)

    def write_file(self, path: Path, data: bytes) -> None:
        with _on_host(f"write {path.name} for the run"):
            write_file(path, data)

    def write_secrets(self, folder: Path, values: dict[str, bytes], uid: int, gid: int) -> None:
        with _on_host("write the run's secrets"):
            write_secrets(folder, values, uid, gid)

    def write_private_git_dir(self, paths: RunPaths, spec: PrivateGitSpec) -> None:
        with _on_host("write the run's private git dir"):
            write_private_git_dir(paths, spec)

    def write_tasks_scaffold(self, paths: RunPaths, harness_tasks: Path) -> None:
        with _on_host("write the run's task view"):
            write_tasks_scaffold(paths, harness_tasks)

    def write_tasks_view(
        self, paths: RunPaths, task_id: str, task_json: bytes, task_md: bytes | None, harness_tasks: Path
    ) -> None:
        with _on_host("write the run's task view"):
            write_tasks_view(paths, task_id, task_json, task_md, harness_tasks)

    def write_case_scope(self, worktree: Path, task_id: str, task_json: bytes) -> None:
        with _on_host("write the run's .case/ scope"):
            write_case_scope(worktree, task_id, task_json)

    def chown_tree(self, top: Path, uid: int, gid: int) -> None:
        with _on_host("hand the run's folders to their owner"):
            chown_tree(top, uid, gid)

    def remove_tree(self, path: Path) -> None:
        with _on_host(f"remove {path}"):
            remove_tree(path)

    def keep_bundle(self, paths: RunPaths, *, max_bytes: int, source: Path | None = None) -> Path | None:
        with _on_host("keep the run's bundle"):
            return keep_bundle(paths, max_bytes=max_bytes, source=source)

    def read_capture(self, paths: RunPaths) -> str | None:
        return read_capture(paths)

    def keep_sandbox(self, paths: RunPaths) -> Path:
        with _on_host("keep the run's sandbox"):
            return keep_sandbox(paths)

    def read_in(self, top: Path, parts: list[str], *, max_bytes: int) -> bytes | None:
        return read_untrusted_in(top, parts, max_bytes=max_bytes)

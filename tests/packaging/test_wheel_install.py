"""A wheel built from a clean copy of the repository, installed into a fresh venv, builds the
images and runs the quickstart: no checkout, no editable install, no LAUNCHER_IMAGES_DIR.

The copy is what `git ls-files -co --exclude-standard` lists (tracked files plus new ones not
ignored: the working tree as it would be committed, never .venv or build/). `pip wheel` builds it
with build isolation (setuptools from the package index); the venv gets the wheel and its
dependencies from the index. `launcher image build --force` then builds launcher/agent-base and
launcher/egress-proxy from the contexts inside the installed package: their content hashes are
the repository's, so the tags are the ones every other test uses, and the engine's layer cache
makes the forced build cheap and byte-for-byte the same image. Finally scripts/quickstart.sh
runs with that venv's `launcher` (LAUNCHER_BIN) in a temporary folder: a real run in Docker that
must exit 0 with the agent's commit on its branch.

Cleanup: every container and network labelled with the quickstart's case root. Images are kept
(they are the shared launcher/* tags, rebuilt from the same content).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from helpers import NO_DOCKER, clean_env, docker_client, docker_reachable, release_root, repo_git

import launcher
from launcher.adapters.docker.images import content_hash
from launcher.cli.image_cmd import RUN_IMAGES

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTION = "worktree_launcher"  # the wheel's spelling of worktree-launcher
# Files each image's Dockerfile needs besides itself (COPY sources).
REQUIRED = {
    "agent-base/Dockerfile",
    "agent-base/gitconfig",
    "egress-proxy/Dockerfile",
    "postgres/Dockerfile",
    "postgres/entrypoint.sh",
}


def env() -> dict[str, str]:
    """This environment minus anything that could point the installed launcher back at the
    checkout (PYTHONPATH, LAUNCHER_IMAGES_DIR, CASE_ROOT, GIT_*)."""
    return clean_env(drop=("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"))


def run(args: list[str], *, cwd: Path, timeout: float, extra: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        args, cwd=cwd, env={**env(), **(extra or {})}, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert proc.returncode == 0, f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def copy_working_tree(dest: Path) -> None:
    listed = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "ls-files", "-co", "--exclude-standard", "-z"],
        capture_output=True,
        check=True,
        env=env(),
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = REPO_ROOT / name
        if source.is_file() and not source.is_symlink():  # a tracked file deleted in the tree is skipped
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.timeout(2400)
def test_a_wheel_installed_into_a_fresh_venv_builds_the_images_and_runs_the_quickstart(tmp_path: Path) -> None:
    if not docker_reachable():
        pytest.skip(NO_DOCKER)
    timings: dict[str, float] = {}
    src, dist, venv, work = tmp_path / "src", tmp_path / "dist", tmp_path / "venv", tmp_path / "quickstart"
    copy_working_tree(src)
    assert not (src / ".venv").exists()

    started = time.monotonic()
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(src)],
        cwd=tmp_path,
        timeout=900,
    )
    timings["wheel"] = time.monotonic() - started
    (wheel,) = dist.glob(f"{DISTRIBUTION}-*.whl")

    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(archive.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    bundled = {n.removeprefix("launcher/_images/") for n in names if n.startswith("launcher/_images/")}
    assert bundled == files_under(src / "images"), "the wheel must carry images/ exactly"
    assert REQUIRED.issubset(bundled)
    assert {n.split("/")[0] for n in names} == {"launcher", f"{DISTRIBUTION}-{launcher.__version__}.dist-info"}
    assert "launcher = launcher.service.client:main" in entry_points

    started = time.monotonic()
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path, timeout=300)
    run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)], cwd=tmp_path, timeout=900)
    timings["install"] = time.monotonic() - started
    where = run(
        [str(venv / "bin" / "python"), "-c", "import launcher; print(launcher.__file__)"], cwd=tmp_path, timeout=60
    )
    assert Path(where.strip()).is_relative_to(venv), f"launcher imported from {where.strip()}, not the venv"

    started = time.monotonic()
    proc = subprocess.run(
        [str(venv / "bin" / "launcher"), "image", "build", "--force", *RUN_IMAGES],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    timings["image build"] = time.monotonic() - started
    assert proc.returncode == 0, f"image build exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    installed_images = venv / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert f"build contexts: {installed_images / 'launcher' / '_images'}" in proc.stderr
    client = docker_client()
    try:
        for name in RUN_IMAGES:
            tag = f"launcher/{name}:{content_hash(src / 'images' / name)}"
            assert f"{tag} (built)" in proc.stdout
            assert client.images.get(tag).labels.get("launcher.image") == name
    finally:
        client.close()

    case_root = work / "case"
    started = time.monotonic()
    try:
        run(
            ["bash", str(src / "scripts" / "quickstart.sh"), str(work)],
            cwd=tmp_path,
            timeout=900,
            extra={"LAUNCHER_BIN": str(venv / "bin" / "launcher")},
        )
        timings["quickstart"] = time.monotonic() - started
    finally:
        leftovers = release_root(case_root)
    assert not (src / ".venv").exists(), "quickstart set up a venv instead of using LAUNCHER_BIN"
    repo = work / "demo-repo"
    branches = repo_git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/launcher/").split()
    assert len(branches) == 1, branches
    assert repo_git(repo, "log", "-1", "--format=%s", branches[0]).strip() == "Add a greeting"
    greeting = repo_git(repo, "show", f"{branches[0]}:GREETING.md")
    assert greeting.startswith("hello from demo-repo-1."), greeting
    assert leftovers == [], leftovers
    size = os.path.getsize(wheel)
    print(f"\nwheel {wheel.name}: {size} bytes; " + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items()))

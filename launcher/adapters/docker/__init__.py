"""Docker adapters: the sandbox a run executes in, and the images it runs."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

from launcher.adapters.safe_io import atomic_write


def entry_script_text() -> bytes:
    return (resources.files("launcher.adapters.docker") / "entry.sh").read_bytes()


def install_entry_script(state_dir: Path) -> Path:
    """Copy the in-container entry script under the case root.

    Bind mounts are resolved by the Docker engine on the host. When launcher itself runs in
    a container (a build box), its package files are not on the host, but the case root is
    mounted at the same path in both, so the script must live there.
    """
    return install_file(entry_script_path(state_dir), entry_script_text())


def entry_script_path(state_dir: Path) -> Path:
    return state_dir / "bin" / "entry.sh"


def egress_proxy_files() -> dict[str, bytes]:
    """The proxy's program: the ``.py`` files of the standard-library-only package launcher.egress."""
    package = resources.files("launcher.egress")
    return {e.name: e.read_bytes() for e in package.iterdir() if e.name.endswith(".py") and e.is_file()}


def install_egress_proxy(state_dir: Path) -> Path:
    """The proxy's program in ``<state_dir>/bin/egress/``, where the engine can mount it.

    Each file is replaced atomically and only when it changed, and ``.py`` files the package
    no longer has are removed: the folder is the package, so nothing stale can be imported.
    """
    folder = egress_proxy_path(state_dir)
    files = egress_proxy_files()
    for name, data in files.items():
        install_file(folder / name, data)
    for entry in folder.iterdir():
        # Hidden names are other launchers' atomic writes in flight.
        if entry.suffix == ".py" and not entry.name.startswith(".") and entry.name not in files:
            entry.unlink(missing_ok=True)
    # Where launcher before the package installed the proxy's single file.
    (state_dir / "bin" / "egress_proxy.py").unlink(missing_ok=True)
    return folder


def egress_proxy_path(state_dir: Path) -> Path:
    return state_dir / "bin" / "egress"


def egress_proxy_sha256(folder: Path) -> str:
    """One digest of every ``.py`` file in an installed program folder, names included."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        data = path.read_bytes()
        digest.update(f"{path.name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def install_file(target: Path, data: bytes) -> Path:
    try:
        if target.read_bytes() == data:
            return target
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data, mode=0o644)
    return target

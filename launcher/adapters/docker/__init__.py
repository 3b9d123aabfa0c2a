"""Docker adapters: the sandbox a run executes in, and the images it runs."""

from __future__ import annotations

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
    return install_file(state_dir / "bin" / "entry.sh", entry_script_text())


def install_egress_proxy(state_dir: Path) -> Path:
    """The proxy's program, a standard-library-only file, where the engine can mount it."""
    data = (resources.files("launcher.egress") / "server.py").read_bytes()
    return install_file(state_dir / "bin" / "egress_proxy.py", data)


def install_file(target: Path, data: bytes) -> Path:
    try:
        if target.read_bytes() == data:
            return target
    except FileNotFoundError:
        target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data, mode=0o644)
    return target

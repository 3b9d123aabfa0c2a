"""Warm pool slots on disk, and the atomic hand-over of one slot to one run.

A slot is a folder. It is warmed in ``pool/warming/<id>`` while its warmer holds a flock on
the folder's lock file (the kernel drops the lock when the warmer dies, so gc can tell an
abandoned slot from one in progress). A finished slot is renamed to ``pool/ready/<id>``. A run
takes it by renaming that folder to its own sandbox folder: rename(2) succeeds for exactly one
caller, so a slot is never handed to two runs, however many launchers ask at once. Draining
and gc take slots the same way, into ``pool/discard/<id>``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
import shlex
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import ValidationError

from launcher.adapters.locks import file_lock, lock_is_held
from launcher.adapters.safe_io import atomic_write
from launcher.errors import InvalidInputError
from launcher.models import PoolSlot, WarmingSlot

SLOT_FILE = "slot.json"
LOCK_FILE = "warming.lock"
CONTROL_DIR = "ctl"  # mounted read-only at /launcher/ctl
_SHELL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class PoolSlots:
    def __init__(self, pool_dir: Path, worktrees_dir: Path) -> None:
        self.pool_dir = pool_dir
        self.warming_dir = pool_dir / "warming"
        self.ready_dir = pool_dir / "ready"
        self.discard_dir = pool_dir / "discard"
        self.worktrees_dir = worktrees_dir / ".pool"

    def worktree_of(self, slot_id: str) -> Path:
        return self.worktrees_dir / slot_id

    @contextmanager
    def allocation_lock(self) -> Iterator[None]:
        """Held while a warmer picks uids for new slots, so two warmers never pick the same."""
        with file_lock(self.pool_dir / "allocation.lock", timeout=120.0, guards="pool"):
            yield

    @contextmanager
    def new_slot(self) -> Iterator[tuple[str, Path]]:
        """A fresh slot folder under warming/, locked for as long as the caller warms it."""
        self.warming_dir.mkdir(parents=True, exist_ok=True)
        for _ in range(16):
            slot_id = "p" + secrets.token_hex(5)
            folder = self.warming_dir / slot_id
            try:
                folder.mkdir(mode=0o755)
            except FileExistsError:
                continue
            break
        else:  # pragma: no cover - 16 collisions of 40 random bits
            raise RuntimeError("could not name a new pool slot")
        fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield slot_id, folder
        finally:
            os.close(fd)

    def record(self, folder: Path, slot: PoolSlot) -> None:
        atomic_write(folder / SLOT_FILE, slot.model_dump_json(indent=2).encode(), mode=0o600)

    def publish(self, slot_id: str) -> None:
        self.ready_dir.mkdir(parents=True, exist_ok=True)
        os.rename(self.warming_dir / slot_id, self.ready_dir / slot_id)

    def ready(self) -> list[PoolSlot]:
        return self._slots_in(self.ready_dir)

    def warming(self) -> list[WarmingSlot]:
        """Slots being warmed, each with whether its warmer is still alive."""
        return [
            WarmingSlot(folder.name, folder, lock_is_held(folder / LOCK_FILE), self.read(folder))
            for folder in _children(self.warming_dir)
        ]

    def read(self, folder: Path) -> PoolSlot | None:
        try:
            return PoolSlot.model_validate_json((folder / SLOT_FILE).read_bytes())
        except (OSError, ValidationError):
            return None

    def claim(self, slot_id: str, dest: Path) -> bool:
        """Move a ready slot to ``dest``; False when another caller took it first."""
        return _move(self.ready_dir / slot_id, dest)

    def claim_for_discard(self, slot_id: str, *, warming: bool = False) -> Path | None:
        """Take a slot out of service (drain, gc); None when a run or another gc took it first."""
        dest = self.discard_dir / slot_id
        return dest if _move((self.warming_dir if warming else self.ready_dir) / slot_id, dest) else None

    # -- the hand-over: a FIFO the slot's container blocks on, and the run's spec ------------

    def make_control(self, folder: Path, uid: int, gid: int) -> Path:
        control = folder / CONTROL_DIR
        control.mkdir(mode=0o700)
        os.mkfifo(control / "go", 0o600)
        if os.geteuid() == 0:
            for path in (control, control / "go"):
                os.lchown(path, uid, gid)
        return control

    def open_go(self, folder: Path) -> int | None:
        """The FIFO's write end; None when the slot's container no longer waits on it.

        Opening without blocking fails with ENXIO when no reader has it open, which is how a
        dead container (engine restarted, killed by hand) is told apart from a waiting one.
        """
        try:
            return os.open(folder / CONTROL_DIR / "go", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):
                return None
            raise

    def write_spec(
        self,
        folder: Path,
        env: dict[str, str],
        take: dict[str, str],
        argv: list[str],
        owner: tuple[int, int],
    ) -> None:
        """The run's environment (exported), what the entry sets up (``take``, not exported) and
        the agent's command, as a script the slot's entry sources.

        Every value is quoted by shlex.quote (POSIX single quotes), so nothing in it is ever
        interpreted by the shell; names are checked to be shell names.
        """
        lines = ["# written by launcher when a run took this slot"]
        for prefix, variables in (("export ", env), ("", take)):
            for name, value in variables.items():
                if not _SHELL_NAME.fullmatch(name):
                    raise InvalidInputError(f"{name!r} is not a variable name a shell accepts")
                if "\0" in value:
                    raise InvalidInputError(f"{name}: a shell variable cannot hold a NUL byte")
                lines.append(f"{prefix}{name}={shlex.quote(value)}")
        lines.append("set -- " + " ".join(shlex.quote(arg) for arg in argv))
        atomic_write(
            folder / CONTROL_DIR / "spec.sh",
            ("\n".join(lines) + "\n").encode(),
            mode=0o600,
            owner=owner if os.geteuid() == 0 else None,
        )

    def go(self, fd: int) -> None:
        try:
            os.write(fd, b"go\n")
        finally:
            os.close(fd)

    def abandon(self, fd: int) -> None:
        """Close without a go: the container never starts the agent; the run's settle removes it."""
        os.close(fd)

    def discarded(self) -> list[Path]:
        return _children(self.discard_dir)

    def _slots_in(self, parent: Path) -> list[PoolSlot]:
        slots = []
        for folder in _children(parent):
            slot = self.read(folder)
            if slot is not None:
                slots.append(slot)
        return sorted(slots, key=lambda s: s.created_at)


def _move(source: Path, dest: Path) -> bool:
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Never replaces: an existing non-empty dest makes rename fail, an existing empty one
        # is not something launcher creates.
        os.rename(source, dest)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _children(parent: Path) -> list[Path]:
    try:
        return sorted(p for p in parent.iterdir() if p.is_dir() and not p.is_symlink())
    except FileNotFoundError:
        return []

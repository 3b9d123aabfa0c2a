"""The run's output: every byte the agent wrote, in order, to the run's log (and the terminal).

    container ─attach─► pump ─► redactor ─► cap ─► log file ─► terminal (its own thread)
        └── the engine's copy, read once after the container exited ──┘ (what the stream missed)

The live stream is attached before the agent can write (before the container starts, or before
a warm slot is told to go), so it starts with the agent's first byte; the agent's writes wait
for launcher to take them, so nothing piles up where the engine could rotate it away. A stream
that ends is not proof that the output ended: once the container has exited, the engine's own
copy is read, and what follows the bytes the stream delivered (checked by their digest) is
appended. Bytes go to the log exactly as written (never decoded); the terminal is fed from the
log file by a thread of its own, so a slow or closed terminal never holds the run or its log.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from launcher.core.ports import Sandbox
from launcher.core.run.secrets import Redactor

Echo = Callable[[bytes], None]
# How long the live stream gets to end once the container has exited.
STREAM_DRAIN_S = 30.0
# The log keeps its first bytes and its last ones (where the AGENT_RESULT block is).
TAIL_MAX = 8 * 1024 * 1024
ECHO_READ = 1024 * 1024
# A time-index entry at most this often: `logs -t` needs to the millisecond, not per write.
TIMES_EVERY_S = 0.005


def times_path(log_path: Path) -> Path:
    """The log's time index, beside it (RunPaths.log_times for a run's)."""
    return log_path.with_name(log_path.name + ".times")


@dataclass(frozen=True)
class LogReport:
    """What the run's record says about its output."""

    output_bytes: int
    dropped: int = 0
    log_max: int = 0
    error: str | None = None

    def details(self) -> dict[str, object]:
        found: dict[str, object] = {"output_bytes": self.output_bytes}
        if self.dropped:
            found.update(log_dropped=self.dropped, log_max=self.log_max)
        if self.error:
            found["log_error"] = self.error
        return found


class LogCap:
    """Keeps a log under ``max_bytes``: its first bytes, a mark where output was dropped, its last ones."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._tail_max = min(max_bytes // 4, TAIL_MAX)
        self._head_left = max_bytes - self._tail_max
        self._tail = bytearray()
        self.dropped = 0

    def feed(self, data: bytes) -> bytes:
        """What goes to the log now; the rest waits in the tail (only its last bytes are kept)."""
        now = data[: self._head_left]
        self._head_left -= len(now)
        rest = data[len(now) :]
        if rest:
            self._tail += rest
            over = len(self._tail) - self._tail_max
            if over > 0:
                del self._tail[:over]
                self.dropped += over
        return now

    def finish(self) -> bytes:
        tail, self._tail = bytes(self._tail), bytearray()
        if not self.dropped:
            return tail
        mark = (
            f"\nlauncher: {self.dropped} bytes of output dropped here: the log keeps at most "
            f"{self.max_bytes} bytes ([run] log_max), the first ones and the last {len(tail)}\n"
        )
        return mark.encode() + tail


class RunOutput:
    """The run's output from its container to its log: attach, then finish once it exited."""

    def __init__(
        self,
        sandbox: Sandbox,
        log_path: Path,
        redactor: Redactor,
        *,
        log_max: int,
        echo: Echo | None = None,
    ) -> None:
        self._sandbox, self._log_path, self._redactor = sandbox, log_path, redactor
        self._cap = LogCap(log_max)
        self._echo_to = echo
        self._lock = threading.Lock()
        self._log: BinaryIO | None = None
        # When bytes went into the log: `logs --timestamps/--since` read it; the log stays bytes exact.
        self._times: BinaryIO | None = None
        self._last_time = 0.0
        self._pump: _Pump | None = None
        self._echo: _EchoTail | None = None
        self._received = 0  # bytes the live stream delivered, and their digest
        self._digest = hashlib.sha256()
        self._engine_prefix: bytes | None = None
        self._errors: list[str] = []
        self._report: LogReport | None = None

    @property
    def attached(self) -> bool:
        return self._pump is not None

    def attach(self, container_id: str, *, engine_prefix: bytes | None = None) -> None:
        """Connect to the container's output before it can write any (call before it starts).

        ``engine_prefix``: the engine's copy of the output holds what a warm slot printed before
        the run took it, through this line; the run's output is what follows it.
        """
        self._engine_prefix = engine_prefix
        log = open(self._log_path, "ab")  # noqa: SIM115 - closed by finish() or close()
        self._log = log
        try:
            self._times = open(times_path(self._log_path), "ab")  # noqa: SIM115 - closed with the log
        except OSError as exc:
            self._errors.append(f"cannot write the log's time index: {exc}")
        if self._echo_to is not None:
            self._echo = _EchoTail(self._log_path, log.tell(), self._echo_to)
            self._echo.start()
        stream = self._sandbox.attach(container_id)
        self._pump = _Pump(stream, self._take, name=f"logs-{container_id[:12]}")
        self._pump.start()

    def finish(self, container_id: str) -> LogReport:
        """Once the container has exited: the rest of its output, then the log closed. Idempotent."""
        if self._report is not None:
            return self._report
        pump = self._pump
        if pump is None:
            self._report = LogReport(output_bytes=0)
            return self._report
        pump.join(STREAM_DRAIN_S)
        if pump.is_alive():
            # Its stream did not end with the container: stop taking from it, keep what came.
            pump.abandoned = True
            self._errors.append(f"the output stream did not end within {STREAM_DRAIN_S:.0f} s of the container")
        else:
            self._catch_up(container_id, pump.error)
        with self._lock:
            self._write(self._redactor.flush())
            self._write_capped(self._cap.finish())
            self._close_log()
        self._report = LogReport(
            output_bytes=self._received,
            dropped=self._cap.dropped,
            log_max=self._cap.max_bytes,
            error="; ".join(self._errors) or None,
        )
        return self._report

    def close(self) -> None:
        """The terminal has shown the whole log (or gone away); nothing is left open."""
        if self._pump is not None and self._pump.is_alive():
            self._pump.abandoned = True
        with self._lock:
            self._close_log()
        if self._echo is not None:
            self._echo.join()

    # -- the pipeline --------------------------------------------------------------------

    def _take(self, chunk: bytes) -> None:
        with self._lock:
            self._received += len(chunk)
            self._digest.update(chunk)
            self._write(self._redactor.feed(chunk))

    def _write(self, data: bytes) -> None:
        self._write_capped(self._cap.feed(data))

    def _write_capped(self, data: bytes) -> None:
        log = self._log
        if not data or log is None:
            return
        try:
            self._stamp(log.tell())
            log.write(data)
            log.flush()
        except OSError as exc:
            # A full disk: say so once, keep draining the stream (the agent waits for it).
            self._errors.append(f"cannot write the log: {exc}")
            self._close_log()
            return
        if self._echo is not None:
            self._echo.advance(log.tell())

    def _stamp(self, offset: int) -> None:
        """Note when the bytes from ``offset`` on were written (a lost index loses times, not output)."""
        now = time.time()
        if self._times is None or now - self._last_time < TIMES_EVERY_S:
            return
        self._last_time = now
        try:
            self._times.write(f"{offset} {now:.6f}\n".encode())
            self._times.flush()
        except OSError as exc:
            self._errors.append(f"cannot write the log's time index: {exc}")
            self._times.close()
            self._times = None

    def _close_log(self) -> None:
        if self._times is not None:
            with contextlib.suppress(OSError):  # only times are lost
                self._times.close()
            self._times = None
        if self._log is not None:
            try:
                self._log.close()
            except OSError as exc:
                self._errors.append(f"cannot write the log: {exc}")
            self._log = None
        if self._echo is not None:
            self._echo.end()

    def _catch_up(self, container_id: str, stream_error: str | None) -> None:
        """Append what the engine kept after the bytes the stream delivered."""
        try:
            missed = self._engine_rest(self._sandbox.logs(container_id))
        except Exception as exc:  # the engine's copy is a second chance; its failure is reported, not raised
            missed = None
            stream_error = stream_error or f"the engine's copy is unreadable: {exc}"
        if missed is None:
            if stream_error:
                self._errors.append(
                    f"the output stream broke after {self._received} bytes ({stream_error}) and the engine "
                    "no longer holds what followed"
                )
            return
        try:
            for chunk in missed:
                self._take(chunk)
        except Exception as exc:  # as above: what was appended stays, the rest is reported
            self._errors.append(f"the engine's copy of the output broke off: {exc}")

    def _engine_rest(self, engine: Iterator[bytes]) -> Iterator[bytes] | None:
        """What follows, in the engine's copy, exactly the bytes the stream delivered; None when the
        copy does not hold them (rotated away, or it differs)."""
        prefix = self._engine_prefix
        held = b""
        it = iter(engine)
        if prefix is not None:
            for chunk in it:
                held += chunk
                cut = held.find(prefix)
                if cut >= 0:
                    held = held[cut + len(prefix) :]
                    break
                held = held[-len(prefix) :]
            else:
                return None
        digest, need = hashlib.sha256(), self._received
        rest = b""
        for chunk in _chain(held, it):
            take = chunk[:need]
            digest.update(take)
            need -= len(take)
            if need == 0:
                rest = chunk[len(take) :]
                break
        if need or digest.digest() != self._digest.digest():
            return None
        return _chain(rest, it)


def _chain(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class _Pump(threading.Thread):
    """Takes the live stream as it comes; records how it ended."""

    def __init__(self, stream: Iterator[bytes], take: Callable[[bytes], None], *, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self._stream, self._take = stream, take
        self.abandoned = False
        self.error: str | None = None

    def run(self) -> None:
        try:
            for chunk in self._stream:
                if self.abandoned:
                    return
                self._take(chunk)
        except Exception as exc:  # a broken stream must not kill the run; finish() reads the engine's copy
            self.error = f"{type(exc).__name__}: {exc}"


class _EchoTail(threading.Thread):
    """Shows the log file on the terminal as it grows, at the terminal's own pace."""

    def __init__(self, path: Path, offset: int, echo: Echo) -> None:
        super().__init__(daemon=True, name="echo")
        self._path, self._offset, self._echo = path, offset, echo
        self._cond = threading.Condition()
        self._written = offset
        self._ended = False

    def advance(self, size: int) -> None:
        with self._cond:
            self._written = size
            self._cond.notify()

    def end(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify()

    def run(self) -> None:
        try:
            with open(self._path, "rb") as log:
                log.seek(self._offset)
                while True:
                    with self._cond:
                        while self._offset >= self._written and not self._ended:
                            self._cond.wait()
                        target = self._written
                    if self._offset >= target:
                        return
                    data = log.read(min(target - self._offset, ECHO_READ))
                    if not data:
                        return
                    self._offset += len(data)
                    self._echo(data)
        except Exception:  # the terminal went away (a closed pipe): the log goes on without it
            return

"""time.sleep() that works under libfaketime, for `cluster.sh skew` (loaded by a .pth at start-up).

A box's clock offset is libfaketime's (LD_PRELOAD + FAKETIME="+300", set by the box's launcher
wrapper) with FAKETIME_DONT_FAKE_MONOTONIC=1, so only the wall clock moves: sleeps, timeouts and
lease-renewal intervals keep real time, as on a box whose clock is merely set wrong. With
Debian's libfaketime 0.9.10 and Python 3.11 one thing breaks then (measured on a box): time.sleep()
fails with EINVAL (Python sleeps with clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME), which that
libfaketime mishandles), while Event/Lock/queue timeouts and select() work. So, only when
libfaketime is preloaded, time.sleep becomes a select() with a monotonic deadline. (Without
FAKETIME_DONT_FAKE_MONOTONIC, threading.Event().wait(timeout) never returns: not an option.)
"""

from __future__ import annotations

import os

if "libfaketime" in os.environ.get("LD_PRELOAD", "") and os.environ.get("FAKETIME"):
    import select
    import time

    def _sleep(secs: float) -> None:
        if secs < 0:
            raise ValueError("sleep length must be non-negative")
        deadline = time.monotonic() + secs
        while (left := deadline - time.monotonic()) > 0:
            select.select([], [], [], left)

    time.sleep = _sleep

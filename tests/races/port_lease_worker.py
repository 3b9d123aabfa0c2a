"""One contender in the port-lease race (tests/races/test_port_lease_race.py), a fresh interpreter.

Usage: ``python port_lease_worker.py BARRIER INDEX JSON_ARGS``. Imports first, then ``ready-INDEX``,
then waits at the start gate (start_gate.py); leases ``count`` ports (one run each) from its root's coordinator. With
``hold`` each leased port is bound and kept listening on 127.0.0.1, as the engine's publishing
would: that is how another root's runs find it taken. It reports its ports in ``out-INDEX.json``,
touches ``leased-INDEX`` and keeps them until ``release`` appears; then it releases them.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

from start_gate import wait_at_gate

from launcher.adapters.store.sqlite import SqliteCoordinator
from launcher.core.portleases import PortLeaser, PortRange

TIMEOUT_S = 120.0


def wait_file(path: Path) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path.name} never appeared")
        time.sleep(0.001)


def main() -> int:
    barrier, index, args = Path(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
    held: list[socket.socket] = []

    def bind_and_hold(port: int) -> bool:
        if not args["hold"]:
            return True
        listener = socket.socket()
        try:
            listener.bind(("127.0.0.1", port))
            listener.listen(1)
        except OSError:
            listener.close()
            return False
        held.append(listener)
        return True

    wait_at_gate(barrier, index, TIMEOUT_S)
    store = SqliteCoordinator(Path(args["db"]))
    leaser = PortLeaser(store, PortRange(low=args["low"], high=args["high"]), bind_and_hold)
    runs = [f"{args['root']}-w{index}.{n}" for n in range(args["count"])]
    leased = [[run_id, leaser.lease(run_id, "web")] for run_id in runs]
    (barrier / f"out-{index}.json").write_text(json.dumps(leased))
    (barrier / f"leased-{index}").touch()
    wait_file(barrier / "release")
    for run_id in runs:
        leaser.release(run_id)
    for listener in held:
        listener.close()
    store.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/bin/sh
# `launcher` on a box: the box's host-side environment, then the real launcher.
# - CASE_ROOT: the box's own case root.
# - FORGE_TOKEN ([publish] token_env in /srv/case/launcher.toml): the forge credential, read from
#   a root-only file into this process only; runs never get it (launcher gives them an
#   environment of their own). GIT_ASKPASS hands it to the clone cache's clone and fetch.
# - /etc/launcher/skew (written by `cluster.sh skew I SECONDS`): this launcher's wall-clock
#   offset, through libfaketime. Launcher and what it starts (git) see it; the box's dockerd and
#   its containers (the runs) keep the real clock (they are not launcher's children), and the
#   coordinator's clock (leases, run_events.at) is the database's.
export CASE_ROOT="${CASE_ROOT:-/srv/case}"
if [ -r /etc/launcher/forge-token ]; then
    FORGE_TOKEN=$(cat /etc/launcher/forge-token)
    export FORGE_TOKEN
    export GIT_ASKPASS=/opt/cluster/forge-askpass.sh
fi
if [ -s /etc/launcher/skew ]; then
    lib=$(ls /usr/lib/*/faketime/libfaketime.so.1 | head -n1)
    export LD_PRELOAD="$lib${LD_PRELOAD:+:$LD_PRELOAD}"
    FAKETIME=$(cat /etc/launcher/skew)
    export FAKETIME
    # Only the wall clock moves: monotonic time (sleeps, timeouts, lease renewal) stays real.
    # Python's time.sleep needs scripts/cluster/faketime_sleep.py then (see there).
    export FAKETIME_DONT_FAKE_MONOTONIC=1
fi
exec /opt/venv/bin/launcher "$@"

"""The short container `launcher doctor` starts from the agent image, as a run's uid sees it.

Its spec is a run's without the run: the run's uid, limits and runtime, no network, a tmpfs at
/tmp and $HOME; the sandbox adapter adds what every run gets (capabilities dropped,
no-new-privileges, read-only root). It prints git's version and whether /tmp and $HOME take a
file and run it, one fact a line, for the checks `git-image` and `home-tmp`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

from launcher.core import labels, uids
from launcher.core.ports.sandbox import Sandbox
from launcher.core.run.container import base_env
from launcher.core.runlayout import CONTAINER_HOME
from launcher.errors import DockerError
from launcher.models import SandboxSpec
from launcher.settings import RunDefaults

DONE = "launcher-doctor-done"
# Plain POSIX sh and the commands a run's entry needs anyway (launcher/adapters/docker/images.py
# NEEDED_COMMANDS): an agent image may have nothing else.
SCRIPT = rf"""
if command -v git >/dev/null 2>&1; then
    if v=$(git --version 2>&1); then s=ok; else s=broken; fi
    echo "git $s $(printf '%s' "$v" | head -n 1 | head -c 200)"
else
    echo "git missing"
fi
for d in /tmp "$HOME"; do
    f="$d/.launcher-doctor-$$"
    if err=$( {{ printf '#!/bin/sh\necho launcher-exec-ok\n' >"$f"; }} 2>&1 ); then
        chmod 700 "$f" 2>/dev/null
        if [ "$("$f" 2>/dev/null)" = launcher-exec-ok ]; then x=exec; else x=noexec; fi
        rm -f "$f"
        echo "dir $d ok $x"
    else
        echo "dir $d unwritable $(printf '%s' "$err" | head -n 1 | head -c 200)"
    fi
done
echo {DONE}
"""


@dataclass(frozen=True)
class ScratchDir:
    path: str
    writable: bool
    executable: bool
    error: str = ""


@dataclass(frozen=True)
class ProbeOutput:
    image: str
    user: str
    finished: bool
    git: str | None = None  # `git version …`, when git ran
    git_problem: str | None = None  # "missing", or what a git that would not run said
    dirs: list[ScratchDir] = field(default_factory=list)
    tail: str = ""


def probe_spec(image: str, root: Path, run: RunDefaults) -> SandboxSpec:
    uid, gid = uids.run_ids(0, run)
    return SandboxSpec(
        image=image,
        name=f"launcher-doctor-{secrets.token_hex(4)}-{labels.root_tag(root)}",
        command=[],
        entrypoint=["/bin/sh", "-c", SCRIPT],
        env=base_env(),
        user=f"{uid}:{gid}",
        workdir="/",
        # Without a run ID: one a killed doctor leaves behind is "a container whose run is
        # unknown" to `launcher gc`, which removes it.
        labels=labels.for_root(root, "check"),
        mounts=[],
        writable_tmp=["/tmp", CONTAINER_HOME],
        network="none",
        memory=run.memory,
        cpus=run.cpus,
        pids_limit=run.pids_limit,
        runtime=run.runtime,
    )


def run_probe(sandbox: Sandbox, spec: SandboxSpec, timeout: float) -> ProbeOutput:
    container = sandbox.create(spec)
    try:
        sandbox.start(container)
        if sandbox.wait(container, timeout) is None:
            raise DockerError(f"the check container of {spec.image} did not finish within {timeout:g} s")
        output = b"".join(sandbox.logs(container)).decode(errors="replace")
    finally:
        sandbox.remove(container)
    return parse_output(spec.image, spec.user, output)


def parse_output(image: str, user: str, output: str) -> ProbeOutput:
    git: str | None = None
    git_problem: str | None = None
    dirs: list[ScratchDir] = []
    for line in output.splitlines():
        word, _, rest = line.partition(" ")
        if word == "git":
            state, _, said = rest.partition(" ")
            if state == "ok":
                git = said.strip()
            else:
                git_problem = "missing" if state == "missing" else said.strip() or state
        elif word == "dir":
            path, _, rest = rest.partition(" ")
            state, _, more = rest.partition(" ")
            if state == "ok":
                dirs.append(ScratchDir(path, writable=True, executable=more.strip() == "exec"))
            else:
                dirs.append(ScratchDir(path, writable=False, executable=False, error=more.strip()))
    return ProbeOutput(
        image=image,
        user=user,
        finished=DONE in output,
        git=git,
        git_problem=git_problem,
        dirs=dirs,
        tail=output[-500:].strip(),
    )

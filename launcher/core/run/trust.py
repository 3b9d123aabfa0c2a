"""What a run trusts: the system CAs of its image, plus [network] ca_file / --ca-file.

Behind a TLS-inspecting corporate proxy every https connection a run makes (through launcher's
egress proxy, which only tunnels) is signed by the corporate CA, and an internal mirror may have
a CA of its own: the run must trust that CA besides its image's own, or pip, npm, git and curl
fail. The image's bundle cannot change (read-only root filesystem, an arbitrary uid), and the
host never reads the image, so:

- the host checks the CA file (PEM certificates only, each parsed; never a key) and writes its
  certificates to the run's sandbox folder, mounted read-only at ``CONTAINER_EXTRA_CA``;
- the entry script, before the agent, writes the image's bundle plus that CA to
  ``CONTAINER_CA_BUNDLE`` in the run's /tmp (a tmpfs of the run's own);
- the usual variables name that bundle (``NODE_EXTRA_CA_CERTS`` the CA alone: node adds it to
  its own roots).

``--ca-file`` is the run's trust only. The egress proxy is shared by every run of the root and
verifies only ``--api-key`` upstreams; it trusts ``[network] ca_file``, which needs no per-run
restart.
"""

from __future__ import annotations

from launcher.core.run.deps import RunDeps
from launcher.core.run.request import RunPlan
from launcher.core.runlayout import RunPaths
from launcher.errors import InvalidInputError
from launcher.models import MountSpec

CONTAINER_EXTRA_CA = "/run/launcher-trust/extra-ca.pem"
# Built by the entry script (launcher/adapters/docker/entry.sh) from the image's bundle and
# CONTAINER_EXTRA_CA; /tmp is the run's own tmpfs, writable by any uid.
CONTAINER_CA_BUNDLE = "/tmp/launcher-ca-bundle.pem"
# Each replaces its tool's default roots, so each names the combined bundle.
BUNDLE_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE")


def check_ca_file(deps: RunDeps, path: str) -> bytes:
    """The CA file's certificates, checked (InvalidInputError, exit 6, when it is unusable)."""
    if deps.trust is None:
        raise InvalidInputError(f"this launcher cannot give runs an extra CA ({path})")
    return deps.trust.read_ca_file(path)


def trust_env() -> dict[str, str]:
    """The variables that make a run's tools trust the combined bundle (and the entry build it)."""
    env = {"LAUNCHER_EXTRA_CA": CONTAINER_EXTRA_CA, "LAUNCHER_CA_BUNDLE": CONTAINER_CA_BUNDLE}
    env.update(dict.fromkeys(BUNDLE_VARIABLES, CONTAINER_CA_BUNDLE))
    env["NODE_EXTRA_CA_CERTS"] = CONTAINER_EXTRA_CA
    return env


def run_trust(deps: RunDeps, plan: RunPlan, paths: RunPaths) -> tuple[list[MountSpec], dict[str, str]]:
    """The mounts and environment that make the run trust ``plan.ca_file`` too (none without one)."""
    if not plan.ca_file:
        return [], {}
    # Checked again here (plan time checks it first): the file may have changed since.
    pem = check_ca_file(deps, plan.ca_file)
    copy = paths.sandbox / "extra-ca.pem"
    deps.workspace.write_file(copy, pem)
    return [MountSpec(target=CONTAINER_EXTRA_CA, source=str(copy), read_only=True)], trust_env()

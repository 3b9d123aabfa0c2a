"""Corporate networks end to end (real Docker, the real proxy, the tests' own stand-in internet).

- ``--ca-file``: mirror.test (a server of this module's own on the stand-in internet) speaks
  HTTPS with a certificate from a throwaway CA of its own. Through the proxy, curl, Python's
  urllib and git inside a run fail to verify it without the CA and verify it with it; the run's
  variables name a bundle that holds the image's CAs and the extra one.
- ``[network] allow_private``: the stand-in internet is a private Docker network. Without the
  setting (and without the test-only public override) its servers are refused; with the
  network's range allowed they are reached, the allowlist still applies, and the proxy is told
  to refuse the host's address in that range (its gateway). Ranges over link-local, metadata or
  loopback addresses are refused before anything starts.

The rules themselves (every range, every address form, every bad CA file) are in
tests/core/test_allow_private_rules.py.
"""

from __future__ import annotations

import itertools
import json
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import containers_of, docker_client, make_repo, networks_of, wait_for
from netkit import HERE, TEST_LABEL, Internet, facts_of
from runkit import Case

pytestmark = [pytest.mark.docker, pytest.mark.slow]

# Runs inside the run's container; prints one FACT line per check.
PROBE = r"""
import json, os, subprocess, urllib.request

def fact(name, value):
    print("FACT %s=%s" % (name, json.dumps(value)), flush=True)

out = subprocess.run(["curl", "-sS", "-m", "15", "https://mirror.test/simple/"], capture_output=True, text=True)
fact("curl", {"rc": out.returncode, "out": out.stdout[-200:], "err": out.stderr[-300:]})
try:
    with urllib.request.urlopen("https://mirror.test/simple/", timeout=15) as answer:
        fact("urllib", {"status": answer.status, "body": answer.read(200).decode()})
except Exception as exc:
    fact("urllib", {"error": repr(exc)[-300:]})
git = subprocess.run(["git", "ls-remote", "https://mirror.test/some/repo.git"], capture_output=True, text=True)
fact("git", {"rc": git.returncode, "err": git.stderr[-400:]})
names = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"]
fact("env", {n: os.environ.get(n) for n in names})
bundle = os.environ.get("SSL_CERT_FILE")
if bundle and os.path.exists(bundle):
    text = open(bundle).read()
    extra = open(os.environ["NODE_EXTRA_CA_CERTS"]).read()
    fact("bundle", {"certificates": text.count("BEGIN CERTIFICATE"), "has_extra": extra.strip() in text,
                    "extra": extra, "writable_by_run": os.access(os.environ["NODE_EXTRA_CA_CERTS"], os.W_OK)})
"""

CERT_ERRORS = ("certificate", "CERTIFICATE_VERIFY_FAILED")


@dataclass
class Mirror:
    """An HTTPS server on the stand-in internet whose certificate only its own CA signs."""

    ca_file: Path
    record: Path

    def received(self) -> list[dict[str, Any]]:
        text = self.record.read_text() if self.record.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def mirror(internet: Internet, agent_image: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mirror]:
    # Its own server and CA: the suite's api.test counts the requests it receives.
    top = Path(tmp_path_factory.mktemp("mirror"))
    top.chmod(0o755)
    certs, record = top / "certs", top / "record"
    certs.mkdir()
    record.mkdir()
    record.chmod(0o777)
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=launcher corporate test CA", "-keyout", "ca.key", "-out", "ca.pem", cwd=certs)  # fmt: skip
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj",
             "/CN=mirror.test", "-keyout", "mirror.key", "-out", "mirror.csr", cwd=certs)  # fmt: skip
    (certs / "ext.cnf").write_text("subjectAltName=DNS:mirror.test\n")
    _openssl("x509", "-req", "-in", "mirror.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", "ext.cnf", "-out", "mirror.pem", cwd=certs)  # fmt: skip
    for name in ("ca.pem", "mirror.pem", "mirror.key"):
        (certs / name).chmod(0o644)
    from docker.types import Mount

    token = secrets.token_hex(4)
    client = docker_client()
    network = client.networks.get(internet.network)
    container = client.containers.create(
        agent_image,
        command=[
            "python3",
            "/srv/upstream.py",
            "mirror.test",
            "443",
            "/record/mirror.jsonl",
            "--tls",
            "/certs/mirror.pem",
            "/certs/mirror.key",
        ],
        name=f"launcher-test-mirror-{token}",
        labels={TEST_LABEL: "egress-suite", "launcher.test-token": token},
        user="1000:1000",
        mounts=[
            Mount("/srv", str(HERE), type="bind", read_only=True),
            Mount("/certs", str(certs), type="bind", read_only=True),
            Mount("/record", str(record), type="bind"),
        ],
        sysctls={"net.ipv4.ip_unprivileged_port_start": "0"},
        network=network.name,
        detach=True,
    )
    try:
        network.disconnect(container)
        network.connect(container, aliases=["mirror.test"])
        container.start()
        wait_for(lambda: b"listening" in container.logs(), timeout=60, what="mirror.test to listen")
        yield Mirror(ca_file=certs / "ca.pem", record=record / "mirror.jsonl")
    finally:
        container.remove(force=True)
        client.close()


def write_config(root: Path, internet: Internet, **network: Any) -> None:
    lines = ["[network]", f'egress_network = "{internet.network}"']
    lines += [f"{key} = {json.dumps(value)}" for key, value in network.items()]
    (root / "launcher.toml").write_text("\n".join(lines) + "\n")


@pytest.fixture
def corp_repo(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "repo", {"README.md": "# corp\n", "corp_probe.py": PROBE})


def run_json(case: Case, task: str, *options: str, env: dict[str, str] | None = None) -> tuple[dict[str, Any], str]:
    result = case.cli("run", "--json", task, *options, env=env, timeout=300)
    assert result.exit_code == 0, result
    record = json.loads(result.stdout)
    return record, str(case.ok("logs", record["id"]).stdout)


def decisions(case: Case, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in case.ok("logs", run_id, "--egress").stdout.splitlines()]


def test_a_run_trusts_the_extra_ca_with_ca_file_and_not_without(
    case: Case, internet: Internet, mirror: Mirror, corp_repo: Path
) -> None:
    write_config(case.root, internet)  # no [network] ca_file: the proxy trusts nothing extra
    public = {"LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS": internet.subnet}
    probe = ["--allow", "mirror.test", "--", "python3", "corp_probe.py"]

    task = case.create_task(corp_repo, "no extra CA")
    record, log = run_json(case, task, *probe, env=public)
    facts = facts_of(log)
    assert facts["curl"]["rc"] != 0, facts["curl"]
    assert any(e in facts["curl"]["err"] for e in CERT_ERRORS), facts["curl"]
    assert "CERTIFICATE_VERIFY_FAILED" in facts["urllib"].get("error", ""), facts["urllib"]
    assert facts["git"]["rc"] != 0, facts["git"]
    assert "certificate" in facts["git"]["err"], facts["git"]
    assert all(value is None for value in facts["env"].values()), facts["env"]
    # The proxy let the tunnels through: the refusal was the run's own TLS check.
    assert {d["decision"] for d in decisions(case, record["id"]) if d["host"] == "mirror.test"} == {"allow"}
    assert mirror.received() == [], "a client sent a request over a connection it could not verify"

    task = case.create_task(corp_repo, "with the extra CA")
    record, log = run_json(case, task, "--ca-file", str(mirror.ca_file), *probe, env=public)
    facts = facts_of(log)
    assert facts["curl"]["rc"] == 0, facts["curl"]
    assert "hello from mirror.test" in facts["curl"]["out"], facts["curl"]
    assert facts["urllib"] == {"status": 200, "body": "hello from mirror.test\n"}, facts["urllib"]
    # git verified the server (its complaint is about the answer, a stand-in that is no repository).
    assert "certificate" not in facts["git"]["err"].lower(), facts["git"]
    assert "mirror.test" in facts["git"]["err"], facts["git"]
    env = facts["env"]
    bundle = env["SSL_CERT_FILE"]
    assert bundle.startswith("/tmp/"), env
    for name in ("REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO", "CURL_CA_BUNDLE"):
        assert env[name] == bundle, env
    assert env["NODE_EXTRA_CA_CERTS"] != bundle, env  # node adds the extra CA to its own roots
    # The image's CAs (Debian ships over a hundred) and the extra one, which is exactly the file's.
    assert facts["bundle"]["certificates"] > 50, facts["bundle"]
    assert facts["bundle"]["has_extra"] is True
    assert facts["bundle"]["extra"].strip() == mirror.ca_file.read_text().strip()
    paths = [e["request_line"].split()[1] for e in mirror.received()]
    assert paths.count("/simple/") == 2, paths  # curl's and urllib's
    assert "/some/repo.git/info/refs?service=git-upload-pack" in paths, paths
    assert facts["bundle"]["writable_by_run"] is False
    assert not networks_of(case.root)


def test_a_bad_ca_file_is_refused_before_any_container(case: Case, internet: Internet, corp_repo: Path) -> None:
    write_config(case.root, internet)
    bad = corp_repo.parent / "not-a-ca.pem"
    bad.write_text("-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n")
    task = case.create_task(corp_repo, "bad CA")
    result = case.cli("run", task, "--ca-file", str(bad), "--", "true", timeout=120)
    assert result.exit_code == 6, result
    assert "private key must never reach a run" in result.stderr, result.stderr
    assert "MIIB" not in result.stderr + result.stdout
    assert not containers_of(case.root)


def test_allow_private_opens_the_named_range_only_and_never_the_host(
    case: Case, internet: Internet, corp_repo: Path
) -> None:
    command = [
        "--allow", "allowed.test", "--", "sh", "-c",
        "for u in http://allowed.test/ http://denied.test/ http://169.254.169.254/; do "
        "printf 'FACT %s=\"%s\"\\n' \"$u\" \"$(curl -s -o /dev/null -w '%{http_code}' \"$u\")\"; done",
    ]  # fmt: skip
    no_override = {"LAUNCHER_TEST_EGRESS_PUBLIC_CIDRS": ""}

    write_config(case.root, internet)
    task = case.create_task(corp_repo, "private, not allowed")
    record, log = run_json(case, task, *command, env=no_override)
    assert facts_of(log)["http://allowed.test/"] == "403"
    (refused,) = [d for d in decisions(case, record["id"]) if d["host"] == "allowed.test"]
    assert "not a public address" in refused["reason"], refused

    write_config(case.root, internet, allow_private=[internet.subnet])
    task = case.create_task(corp_repo, "private, allowed")
    record, log = run_json(case, task, *command, env=no_override)
    facts = facts_of(log)
    assert facts["http://allowed.test/"] == "200", facts
    assert facts["http://denied.test/"] == "403", "allow_private lifted the allowlist"
    assert facts["http://169.254.169.254/"] == "403", facts
    by_host = {d["host"]: d for d in decisions(case, record["id"])}
    assert by_host["allowed.test"]["decision"] == "allow", by_host
    assert by_host["allowed.test"]["address"] == internet.ips["allowed.test"], by_host
    assert "allowlist" in by_host["denied.test"]["reason"], by_host

    # The proxy was told the range, and told to refuse the host inside it (the network's gateway).
    (proxy,) = [c for c in containers_of(case.root, include_proxy=True) if c.labels["launcher.kind"] == "egress-proxy"]
    argv = proxy.attrs["Config"]["Cmd"]
    pairs = set(itertools.pairwise(argv))
    assert ("--allow-private", internet.subnet) in pairs, argv
    assert ("--deny-addr", internet.gateway) in pairs, argv
    case.ok("gc")


@pytest.mark.parametrize(
    ("ranges", "message"),
    [
        (["169.254.0.0/16"], "link-local"),
        (["10.20.0.0/16", "127.0.0.0/8"], "loopback"),
        (["fd00::/8"], "metadata"),
        (["10.0.0.0/8"], "subnet_pool"),
        (["10.20.0.0/33"], "not a network range"),
    ],
)
def test_allow_private_ranges_runs_never_reach_are_refused_before_anything_starts(
    case: Case, internet: Internet, corp_repo: Path, ranges: list[str], message: str
) -> None:
    write_config(case.root, internet, allow_private=ranges)
    task = case.create_task(corp_repo, "bad range")
    result = case.cli("run", task, "--allow", "allowed.test", "--", "true", timeout=120)
    assert result.exit_code == 6, result
    assert message in result.stderr, result.stderr
    assert "allow_private" in result.stderr, result.stderr
    assert case.runs() == []
    assert not containers_of(case.root, include_proxy=True)
    assert not networks_of(case.root)

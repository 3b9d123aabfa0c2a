"""Corporate networks, the rules: which private ranges [network] allow_private may name, what the
proxy still refuses inside them, and which CA files a run may be given (PEM certificates only).

The end-to-end side (real Docker, the real proxy) is tests/network/test_corporate_networks.py.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from launcher.adapters.ca_bundle import CaFiles, check_ca_pem, read_ca_file
from launcher.adapters.docker.egress import host_addresses
from launcher.core.netpolicy import check_allow_private
from launcher.core.run.trust import BUNDLE_VARIABLES, CONTAINER_CA_BUNDLE, CONTAINER_EXTRA_CA, run_trust
from launcher.egress.__main__ import parse_args
from launcher.egress.addresses import address_refusal, own_addresses
from launcher.errors import InvalidInputError

POOL = "10.213.0.0/16"


def nets(*texts: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(t) for t in texts]


# ---------------------------------------------------------------- allow_private: the ranges


@pytest.mark.parametrize("ranges", [["10.20.0.0/16"], ["192.168.50.0/24", "172.20.0.0/14"], ["fd12:3456::/32"], []])
def test_internal_ranges_are_accepted_as_written(ranges: list[str]) -> None:
    assert [str(n) for n in check_allow_private(ranges, subnet_pool=POOL)] == ranges


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("10.20.0.0", None),  # a single address is a /32: accepted
        ("mirror.corp", "is not a network range"),
        ("10.20.0.0/33", "is not a network range"),
        ("10.20.0.1/16", "did you mean 10.20.0.0/16"),
        ("169.254.0.0/16", "link-local"),
        ("169.254.169.254/32", "link-local"),
        ("169.0.0.0/8", "169.254.0.0/16"),
        ("100.64.0.0/10", "100.100.100.200/32"),
        ("127.0.0.0/8", "loopback"),
        ("0.0.0.0/0", "this-network"),
        ("224.0.0.0/8", "multicast"),
        ("::1/128", "loopback"),
        ("fe80::/64", "link-local"),
        ("fd00::/8", "fd00:ec2::254"),
        ("::ffff:10.20.0.0/112", "write the IPv4 range"),
        ("64:ff9b::/96", "write the IPv4 range"),
        ("2002:a14::/32", "write the IPv4 range"),
        ("10.0.0.0/8", "subnet_pool 10.213.0.0/16"),
        ("10.213.7.0/24", "the runs' own networks"),
    ],
)
def test_ranges_that_reach_what_runs_never_reach_are_refused_with_the_reason(text: str, message: str | None) -> None:
    if message is None:
        assert [str(n) for n in check_allow_private([text], subnet_pool=POOL)] == [f"{text}/32"]
        return
    with pytest.raises(InvalidInputError) as caught:
        check_allow_private(["10.20.0.0/16", text], subnet_pool=POOL)
    assert caught.value.exit_code == 6
    assert message in str(caught.value), str(caught.value)
    assert repr(text) in caught.value.message  # names the range at fault, not only the rule


def test_the_pool_that_is_checked_is_the_configured_one() -> None:
    assert check_allow_private(["10.0.0.0/8"], subnet_pool="172.31.0.0/16") == nets("10.0.0.0/8")
    with pytest.raises(InvalidInputError, match="subnet_pool"):
        check_allow_private(["172.16.0.0/12"], subnet_pool="172.31.0.0/16")


# ---------------------------------------------------------------- allow_private: the proxy's decision


def test_the_proxy_reaches_an_allowed_private_range_and_nothing_next_to_it() -> None:
    allowed = nets("10.20.0.0/16")
    assert address_refusal("10.20.3.4", private_allowed=allowed) is None
    assert address_refusal("::ffff:10.20.3.4", private_allowed=allowed) is None  # judged as its IPv4 address
    assert "not a public address" in (address_refusal("10.21.0.1", private_allowed=allowed) or "")
    assert "not a public address" in (address_refusal("10.20.3.4") or ""), "without the setting: refused"
    assert address_refusal("8.8.8.8", private_allowed=allowed) is None


def test_the_hosts_own_address_stays_refused_inside_an_allowed_range() -> None:
    allowed, host = nets("10.20.0.0/16"), {ipaddress.ip_address("10.20.0.1")}
    assert address_refusal("10.20.0.1", deny=host, private_allowed=allowed) == "10.20.0.1, the launcher host"
    assert address_refusal("::ffff:10.20.0.1", deny=host, private_allowed=allowed) is not None
    assert address_refusal("10.20.0.2", deny=host, private_allowed=allowed) is None


@pytest.mark.parametrize(
    ("address", "allowed"),
    [
        ("169.254.169.254", "169.254.0.0/16"),
        ("64:ff9b::a9fe:a9fe", "169.254.0.0/16"),  # NAT64 around the metadata address
        ("fd00:ec2::254", "fd00::/8"),
        ("100.100.100.200", "100.64.0.0/10"),
        ("127.0.0.1", "0.0.0.0/0"),
        ("::ffff:127.0.0.1", "0.0.0.0/0"),
        ("0.0.0.0", "0.0.0.0/0"),
        ("fe80::1%eth0", "fe80::/10"),
        ("::1", "::/0"),
    ],
)
def test_the_proxy_never_reaches_loopback_link_local_or_metadata_even_when_told_to(address: str, allowed: str) -> None:
    # Ranges the launcher refuses to configure, handed to the proxy anyway: its own guard holds.
    assert address_refusal(address, private_allowed=nets(allowed)) is not None


def test_a_mapped_form_of_an_allowed_range_does_not_open_loopback() -> None:
    assert address_refusal("::ffff:127.0.0.1", private_allowed=nets("::ffff:0:0/96")) is not None


def test_the_proxy_command_line_takes_ranges_and_then_refuses_its_own_addresses(tmp_path: Path) -> None:
    args = ["--policies", str(tmp_path), "--logs", str(tmp_path)]
    plain, *_ = parse_args(args)
    assert plain.private_allowed == ()
    config, *_ = parse_args([*args, "--allow-private", "10.20.0.0/16", "--deny-addr", "10.20.0.1"])
    assert config.private_allowed == tuple(nets("10.20.0.0/16"))
    assert ipaddress.ip_address("10.20.0.1") in config.deny_addrs
    assert own_addresses() <= config.deny_addrs
    assert own_addresses(), "this machine lists no address of its own"
    with pytest.raises(SystemExit):
        parse_args([*args, "--allow-private", "10.20.0.1/16"])


def test_the_host_addresses_inside_an_allowed_range_are_listed_for_the_proxy() -> None:
    local = sorted(str(a) for a in own_addresses() if not a.is_global and not a.is_loopback and a.version == 4)
    if not local:
        pytest.skip("this machine has no private IPv4 address of its own")
    address = local[0]
    assert address not in host_addresses(), "private host addresses are refused anyway"
    assert address in host_addresses([f"{address}/32"])
    assert address not in host_addresses(["192.0.2.0/24"])


# ---------------------------------------------------------------- the extra CA


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pems(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command on this machine")
    folder = Path(tmp_path_factory.mktemp("ca"))
    for name in ("one", "two"):
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-days", "2", "-subj", f"/CN=launcher test CA {name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.pem", cwd=folder)  # fmt: skip
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_ca_file_is_reduced_to_its_certificates(pems: dict[str, bytes], tmp_path: Path) -> None:
    bundle = tmp_path / "corp.pem"
    bundle.write_bytes(b"# the corporate CAs\n" + pems["one.pem"] + b"\nsome comment\n" + pems["two.pem"])
    text = read_ca_file(str(bundle))
    assert text == pems["one.pem"].strip() + b"\n" + pems["two.pem"].strip() + b"\n"
    assert b"comment" not in text
    link = tmp_path / "link.pem"  # how /etc/ssl/certs names its files
    link.symlink_to(bundle)
    assert CaFiles().read_ca_file(str(link)) == text


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p["one.pem"] + p["one.key"], "PRIVATE KEY as well as certificates; a private key must never"),
        (lambda p: p["one.key"], "PRIVATE KEY"),
        (lambda p: b"", "no complete PEM certificate"),
        (lambda p: b"not a certificate at all\n", "no complete PEM certificate"),
        (lambda p: p["one.pem"] + p["two.pem"][:200], "truncated"),
        (lambda p: p["one.pem"].replace(b"\n", b"\n@@", 3), "certificate 1 of the CA file"),
        (lambda p: p["one.pem"][:40] + b"AAAA" + p["one.pem"][40:], "does not parse"),
    ],
)
def test_a_ca_file_that_is_not_pem_certificates_is_refused(
    pems: dict[str, bytes], tmp_path: Path, make: Any, message: str
) -> None:
    bundle = tmp_path / "corp.pem"
    bundle.write_bytes(make(pems))
    with pytest.raises(InvalidInputError) as caught:
        read_ca_file(str(bundle))
    assert caught.value.exit_code == 6
    assert message in str(caught.value), str(caught.value)
    assert "-----" not in caught.value.message, "the message repeats the file's content"


def test_a_ca_file_that_is_missing_or_not_a_file_is_refused_without_hanging(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_ca_file(str(tmp_path / "nope.pem"))
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_ca_file(str(fifo))
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_ca_file(str(tmp_path))
    with pytest.raises(InvalidInputError, match="not a regular file"):
        read_ca_file("/dev/zero")


def test_check_ca_pem_names_where_the_file_came_from() -> None:
    with pytest.raises(InvalidInputError, match=r"--ca-file x\.pem holds no"):
        check_ca_pem(b"", "--ca-file x.pem")


class _Workspace:
    def __init__(self) -> None:
        self.written: dict[Path, bytes] = {}

    def write_file(self, path: Path, data: bytes) -> None:
        self.written[path] = data
        path.write_bytes(data)


def test_run_trust_mounts_the_checked_certificates_and_names_the_bundle(pems: dict[str, bytes], tmp_path: Path) -> None:
    (tmp_path / "ca.pem").write_bytes(pems["one.pem"])
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    workspace = _Workspace()
    deps: Any = SimpleNamespace(trust=CaFiles(), workspace=workspace)
    paths: Any = SimpleNamespace(sandbox=sandbox)
    no_ca: Any = SimpleNamespace(ca_file=None)
    assert run_trust(deps, no_ca, paths) == ([], {})
    plan: Any = SimpleNamespace(ca_file=str(tmp_path / "ca.pem"))
    mounts, env = run_trust(deps, plan, paths)
    (mount,) = mounts
    assert (mount.target, mount.read_only) == (CONTAINER_EXTRA_CA, True)
    assert Path(mount.source).parent == sandbox
    assert workspace.written == {Path(mount.source): pems["one.pem"].strip() + b"\n"}
    for name in (*BUNDLE_VARIABLES, "LAUNCHER_CA_BUNDLE"):
        assert env[name] == CONTAINER_CA_BUNDLE
    assert set(BUNDLE_VARIABLES) >= {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "PIP_CERT", "GIT_SSL_CAINFO"}
    assert env["NODE_EXTRA_CA_CERTS"] == env["LAUNCHER_EXTRA_CA"] == CONTAINER_EXTRA_CA


def test_run_trust_refuses_a_bad_ca_file_and_a_launcher_that_cannot_read_one(tmp_path: Path) -> None:
    (tmp_path / "bad.pem").write_bytes(b"junk")
    paths: Any = SimpleNamespace(sandbox=tmp_path)
    plan: Any = SimpleNamespace(ca_file=str(tmp_path / "bad.pem"))
    reading: Any = SimpleNamespace(trust=CaFiles(), workspace=_Workspace())
    with pytest.raises(InvalidInputError, match="no complete PEM certificate"):
        run_trust(reading, plan, paths)
    blind: Any = SimpleNamespace(trust=None, workspace=_Workspace())
    with pytest.raises(InvalidInputError, match="cannot give runs an extra CA"):
        run_trust(blind, plan, paths)

"""The extra CA a run trusts: read from the operator's file, checked, reduced to its certificates.

The file is the operator's ([network] ca_file, --ca-file), so a symlink to it is followed
(Debian's /etc/ssl/certs/*.pem are symlinks), but what it names must be a regular file under
a size cap: a FIFO or /dev/zero named by mistake must not hang or flood the launcher. Each
certificate is parsed by OpenSSL (through the ssl module); anything but certificates is
refused, so a key pasted into the same file never reaches a run.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path

from launcher.adapters.safe_io import open_untrusted
from launcher.errors import InvalidInputError

# The whole Mozilla bundle is about 220 KB; a corporate bundle a few times that at most.
MAX_CA_FILE = 4 * 1024 * 1024
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----(.*?)-----END \1-----", re.DOTALL)
_PEM_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")


def read_ca_file(path: str) -> bytes:
    """The file's certificates as PEM (one block per certificate, newline-terminated)."""
    where = f"the CA file {path}"
    try:
        target = Path(path).expanduser().resolve(strict=True)
        fd, info = open_untrusted(target)
    except FileNotFoundError:
        raise InvalidInputError(f"{where} does not exist", hint="pass a PEM file of CA certificates") from None
    except OSError as exc:
        raise InvalidInputError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        if info.st_size > MAX_CA_FILE:
            raise InvalidInputError(f"{where} is {info.st_size} bytes, over the {MAX_CA_FILE}-byte cap")
        data = os.read(fd, MAX_CA_FILE + 1)
    finally:
        os.close(fd)
    return check_ca_pem(data, where)


def check_ca_pem(data: bytes, where: str) -> bytes:
    """``data``'s certificates as PEM; InvalidInputError when it is anything but certificates."""
    kinds = [m.group(1).decode() for m in _PEM_BEGIN.finditer(data)]
    others = sorted({k for k in kinds if k != "CERTIFICATE"})
    if others:
        secret = any("PRIVATE KEY" in k for k in others)
        raise InvalidInputError(
            f"{where} holds {', '.join(others)} as well as certificates"
            + ("; a private key must never reach a run" if secret else ""),
            hint="keep only the CA certificates (-----BEGIN CERTIFICATE-----) in the file",
        )
    blocks = [m.group(0) for m in _PEM_BLOCK.finditer(data)]
    if not blocks or len(blocks) != len(kinds):
        raise InvalidInputError(
            f"{where} holds no complete PEM certificate" if not blocks else f"{where} holds a truncated certificate",
            hint="a CA file is PEM: -----BEGIN CERTIFICATE----- … -----END CERTIFICATE-----, one block per CA",
        )
    for number, block in enumerate(blocks, 1):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        try:
            context.load_verify_locations(cadata=block.decode("ascii"))
        except (ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidInputError(f"certificate {number} of {where} does not parse: {exc}") from None
    return b"\n".join(blocks) + b"\n"


class CaFiles:
    """TrustPort: the CA file read from this machine's file system."""

    def read_ca_file(self, path: str) -> bytes:
        return read_ca_file(path)

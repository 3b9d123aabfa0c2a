"""Reading the extra CA a run trusts ([network] ca_file, --ca-file) on the host."""

from __future__ import annotations

from typing import Protocol


class TrustPort(Protocol):
    def read_ca_file(self, path: str) -> bytes:
        """The certificates of the operator's CA file ``path`` as PEM, checked.

        InvalidInputError when it cannot be read, holds no certificate, holds a certificate
        that does not parse, or holds anything else (a private key above all): a run sees it.
        """
        ...

"""HTTP's token grammar (RFC 9110, section 5.6.2): what a header name or a method may be.

Its own module so that the policy parser, which the host imports on every run, does not bring
in the proxy's HTTP/1 reader and asyncio with it.
"""

from __future__ import annotations

import re

TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")

"""launcher's egress proxy: the only way out of a run's network.

Standard library only, and no import of the rest of launcher: the launcher copies this
package's ``.py`` files into a container that has nothing but python3 (3.11) and
ca-certificates, where it runs unprivileged as the package ``egress``. Modules import each
other relatively, so the same files run as ``launcher.egress`` on the host (``python -m
launcher.egress``) and in tests.

hostnames
    which host names and allow patterns are names (shared with launcher.core.netpolicy)
addresses
    which resolved addresses are public
tls
    the server name of a TLS ClientHello
http1
    request heads, body framing, chunked bodies, the head sent upstream, error answers
policy
    the per-run policy files and their allow rules (the file format is documented there)
server
    the asyncio proxy
idle
    exiting when no run needs the proxy, in step with a launcher starting one
__main__
    the command line
"""

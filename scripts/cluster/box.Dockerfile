# The test cluster's image (scripts/cluster.sh): every box runs it, and so does the stand-in
# forge. A box is a "machine" with its own Docker Engine (Debian's docker.io, started by
# start.sh), launcher installed like the project's own Dockerfile installs it (a normal,
# non-editable install into /opt/venv), git, and libfaketime for clock-skew tests. The forge
# runs tests/forgekit.py's server (python3 + git; forgekit imports pytest, hence python3-pytest).
#
# Context: a tar of the project root made by scripts/cluster.sh (only what is COPYed below).
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        docker.io iptables ca-certificates git python3 python3-venv python3-pytest procps iproute2 \
        faketime postgresql-client \
 && rm -rf /var/lib/apt/lists/*

# Behind a proxy that intercepts HTTPS, pip needs that proxy's CA (PEM text), as in ../../Dockerfile.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/launcher-extra.crt \
        && update-ca-certificates >/dev/null; \
    fi

WORKDIR /opt/launcher
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY launcher ./launcher
COPY images ./images
RUN python3 -m venv /opt/venv \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install --no-cache-dir --quiet . \
 && cd / && rm -rf /opt/launcher
WORKDIR /

COPY tests/forgekit.py /opt/cluster/forgekit.py
COPY scripts/cluster/start.sh scripts/cluster/launcher-wrapper.sh scripts/cluster/forge-askpass.sh \
     scripts/cluster/faketime_sleep.py /opt/cluster/
# faketime_sleep.py: time.sleep under libfaketime, for `cluster.sh skew` (a no-op otherwise).
RUN site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
 && cp /opt/cluster/faketime_sleep.py "$site/cluster_faketime_sleep.py" \
 && echo 'import cluster_faketime_sleep' >"$site/cluster_faketime_sleep.pth" \
 && chmod 0755 /opt/cluster/*.sh \
 && ln -s /opt/cluster/launcher-wrapper.sh /usr/local/bin/launcher \
 && mkdir -p /etc/launcher /srv/case

ENV PYTHONUNBUFFERED=1
CMD ["/opt/cluster/start.sh"]

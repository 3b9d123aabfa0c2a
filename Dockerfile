# launcher's own image: the host-side coordinator client and batch workers, for CI and build
# boxes. It talks to the host's Docker engine through the mounted socket, so the case root
# (and the repositories) must be mounted at the same path as on the host: the engine resolves
# every bind mount of a run on the host.
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

# Behind a proxy that intercepts HTTPS, pip needs that proxy's CA: pass it as PEM text,
#   docker build --build-arg EXTRA_CA_CERTS="$(cat /usr/local/share/ca-certificates/*.crt)" .
# (compose.yaml forwards LAUNCHER_EXTRA_CA_CERTS). Empty by default: nothing is added.
ARG EXTRA_CA_CERTS=""
RUN if [ -n "$EXTRA_CA_CERTS" ]; then \
        printf '%s\n' "$EXTRA_CA_CERTS" >/usr/local/share/ca-certificates/launcher-extra.crt \
        && update-ca-certificates >/dev/null; \
    fi

# A normal (non-editable) install: the wheel carries images/ as package data (setup.py), so
# `launcher image build` works in this image without the sources, which are removed.
WORKDIR /opt/launcher
COPY pyproject.toml setup.py MANIFEST.in README.md ./
COPY launcher ./launcher
COPY images ./images
RUN python3 -m venv /opt/venv \
 && PIP_CERT=/etc/ssl/certs/ca-certificates.crt /opt/venv/bin/pip install --no-cache-dir --quiet . \
 && cd / && rm -rf /opt/launcher
WORKDIR /

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["launcher"]
CMD ["--help"]

# launcher's own image: the host-side coordinator client and batch workers, for CI and build
# boxes. It talks to the host's Docker engine through the mounted socket, so the case root
# (and the repositories) must be mounted at the same path as on the host: the engine resolves
# every bind mount of a run on the host.
FROM debian:bookworm-slim

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/launcher
COPY pyproject.toml README.md ./
COPY launcher ./launcher
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir --quiet . \
 && rm -rf /opt/launcher/build
COPY images ./images

ENV PATH=/opt/venv/bin:$PATH \
    LAUNCHER_IMAGES_DIR=/opt/launcher/images \
    PYTHONUNBUFFERED=1
ENTRYPOINT ["launcher"]
CMD ["--help"]

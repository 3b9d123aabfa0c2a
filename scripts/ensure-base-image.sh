#!/usr/bin/env bash
# Make sure debian:bookworm-slim exists in the local Docker engine.
#
# Why this exists: some build machines have a Docker engine but no registry. Where the
# image can be pulled we pull it; where it cannot, we build an equivalent root filesystem
# with Debian's own debootstrap (minbase variant) and `docker import` it under the same
# name, so every Dockerfile in images/ stays an ordinary `FROM debian:bookworm-slim`.
set -euo pipefail

image="${LAUNCHER_BASE_IMAGE:-debian:bookworm-slim}"
suite="${LAUNCHER_BASE_SUITE:-bookworm}"
mirror="${LAUNCHER_DEBIAN_MIRROR:-http://deb.debian.org/debian}"

log() { printf 'ensure-base-image: %s\n' "$*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then
    log "$image already present"
    exit 0
fi

if timeout 60 docker pull "$image" >/dev/null 2>&1; then
    log "pulled $image"
    exit 0
fi
log "$image cannot be pulled here; building it offline with debootstrap"

if ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ]; then
        log "debootstrap is missing and installing it needs root: apt-get install debootstrap"
        exit 1
    fi
    log "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

workdir="$(mktemp -d "${TMPDIR:-/tmp}/launcher-rootfs.XXXXXX")"
cleanup() { rm -rf --one-file-system "$workdir"; }
trap cleanup EXIT

rootfs="$workdir/rootfs"
debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" >"$workdir/debootstrap.log" 2>&1 || {
    tail -n 30 "$workdir/debootstrap.log" >&2
    log "debootstrap failed (log above)"
    exit 1
}

# Trim what the official slim image does not ship either, so layers built on it stay small.
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb http://deb.debian.org/debian-security %s-security main\n' \
    "$mirror" "$suite" "$mirror" "$suite" "$suite" >"$rootfs/etc/apt/sources.list"

tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'CMD ["bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    - "$image" >/dev/null
log "imported $image ($(docker image inspect -f '{{.Size}}' "$image") bytes)"

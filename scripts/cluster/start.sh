#!/bin/sh
# A box's PID 1: its own Docker Engine. The box runs with a private cgroup namespace (the host
# is on cgroup v1), so the controllers are mounted afresh here for dockerd and its containers.
# /var/lib/docker is a volume (scripts/cluster.sh): on the host's own file system overlay2 works,
# and dockerd picks it by itself (vfs where it cannot). CLUSTER_STORAGE_DRIVER overrides the choice.
set -eu
umount -l /sys/fs/cgroup 2>/dev/null || true
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
for sys in $(awk '!/^#/ { if ($4 == 1) print $1 }' /proc/cgroups); do
    mkdir -p "/sys/fs/cgroup/$sys"
    mount -n -t cgroup -o "$sys" cgroup "/sys/fs/cgroup/$sys" 2>/dev/null || rmdir "/sys/fs/cgroup/$sys"
done
mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd || true
# A killed box leaves its pid files behind; dockerd and containerd refuse to start over them.
rm -f /var/run/docker.pid /var/run/docker/containerd/containerd.pid /run/docker.pid
if [ -n "${CLUSTER_STORAGE_DRIVER:-}" ]; then
    exec dockerd --storage-driver="$CLUSTER_STORAGE_DRIVER" --log-level=warn
fi
exec dockerd --log-level=warn

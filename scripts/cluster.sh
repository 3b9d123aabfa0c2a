#!/usr/bin/env bash
# A test cluster on one machine: N "boxes" (containers that each run their own Docker Engine,
# with launcher installed and its images loaded), one PostgreSQL coordinator and one stand-in
# forge (tests/forgekit.py's git smart-HTTP server), each with its own address on private
# networks. See scripts/cluster/README.md; `scripts/cluster.sh --help` for the commands.
#
# PRIVILEGED FOR THESE TEST HOSTS ONLY, NEVER FOR RUNS. A box is as privileged as this machine
# lets a container be (`--privileged` is refused here: the engine itself lacks CAP_SYS_RESOURCE):
# every capability the engine has (--cap-add ALL --cap-drop SYS_RESOURCE), no seccomp and no
# AppArmor profile, /proc and /sys unmasked, and a cgroup namespace of its own. That is what a
# Docker Engine inside needs; it makes a box a root-equivalent of the host. The runs a box's
# engine starts are launcher's ordinary runs (all capabilities dropped, a per-run uid, limits).
#
# Everything made here is labelled launcher.cluster=$CLUSTER_NAME and named $CLUSTER_NAME-…;
# `down` removes exactly that (containers, networks, volumes) and the cluster's state folder.
set -euo pipefail

NAME="${CLUSTER_NAME:-launcher-cluster}"
LABEL="launcher.cluster=$NAME"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE_DIR="${CLUSTER_STATE_DIR:-${TMPDIR:-/tmp}/$NAME}"
BOX_REPO="launcher/cluster-box"
DB_IMAGE="${CLUSTER_DB_IMAGE:-launcher/postgres:15}"
# The launcher images every box gets (runs with --network none need only the agent image).
BOX_IMAGES="${CLUSTER_IMAGES:-launcher/agent-base:latest launcher/egress-proxy:latest}"
DEMO_REPO="${CLUSTER_DEMO_REPO:-demo}"
COORD_NET="$NAME-coordnet"
FORGE_NET="$NAME-forgenet"
DB="$NAME-db"
FORGE="$NAME-forge"
FORGE_PORT=8080
CASE_ROOT_IN_BOX=/srv/case
READY_TIMEOUT_S="${CLUSTER_READY_TIMEOUT:-120}"
# The CPUs each box may use (docker --cpus: its engine and its runs share them); empty: no limit.
BOX_CPUS="${CLUSTER_BOX_CPUS:-}"

usage() {
    cat <<EOF
usage: scripts/cluster.sh COMMAND [ARGS]     (cluster: \$CLUSTER_NAME, now "$NAME")

  up N                 build the box image (skipped when unchanged), start the coordinator
                       (PostgreSQL), the forge (with repository $DEMO_REPO.git) and N boxes;
                       print NAME=value lines (as \`env\`)
  env                  print the running cluster's NAME=value lines again
  image                build the box image (skipped when unchanged) and print its tag
  box I -- CMD...      run CMD on box I (stdin passed through, exit status kept); on a box,
                       \`launcher\` has the box's case root, coordinator and forge credential
  kill I               docker kill box I: its engine and its runs die with it
  restart I            start a killed box again (its engine comes back, its images are kept)
  pause I / unpause I  freeze / thaw box I (its engine and runs with it)
  cut I / heal I       disconnect / reconnect box I from the coordinator's network only
                       (it still reaches the forge)
  restart-db           restart the PostgreSQL server (its data is kept)
  sql QUERY            run QUERY with psql on the coordinator (unaligned, tab-separated)
  skew I SECONDS       launchers started on box I from now on see their wall clock offset by
                       SECONDS (libfaketime; 0 removes it); its engine and runs keep real time
  status               what is running
  down                 remove every container, network and volume labelled $LABEL,
                       and $STATE_DIR (idempotent)

environment: CLUSTER_NAME (default launcher-cluster), CLUSTER_STATE_DIR (default
\${TMPDIR:-/tmp}/\$CLUSTER_NAME), CLUSTER_IMAGES (images loaded into every box),
CLUSTER_DB_IMAGE (default launcher/postgres:15), CLUSTER_DEMO_REPO (default demo),
CLUSTER_STORAGE_DRIVER (the boxes' engines'; default: the engine's choice, overlay2 where it works),
CLUSTER_BOX_CPUS (CPUs each box may use, e.g. 0.5, as \`docker run --cpus\`: its engine and every
run on it share them; default: no limit), CLUSTER_BOX_IMAGE (\`up\` starts the boxes and the forge
from this image as it is, e.g. one \`image\` printed earlier, instead of building one from the
checkout; default: build).
EOF
}

log() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

box_name() {
    [[ "${1:-}" =~ ^[1-9][0-9]*$ ]] || die "a box is named by its number (1, 2, ...), not '${1:-}'"
    local name="$NAME-box$1"
    docker container inspect "$name" >/dev/null 2>&1 || die "no box $1 in cluster $NAME ($name)"
    printf '%s' "$name"
}

# Poll a command until it succeeds, up to a deadline (no blind sleeps).
wait_until() {
    local what="$1" timeout="$2"
    shift 2
    local deadline=$((SECONDS + timeout))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${timeout}s waiting for $what"
        sleep 0.3
    done
}

# -- images ---------------------------------------------------------------------------------------

# The box image's build context: only what box.Dockerfile copies, as a reproducible tar (its
# digest is the image's tag, so an unchanged tree is never built twice).
context_tar() {
    (cd "$ROOT" && tar --create --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner \
        --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' \
        pyproject.toml setup.py MANIFEST.in README.md launcher images tests/forgekit.py scripts/cluster)
}

box_image() {
    local tag
    tag="$BOX_REPO:$(context_tar | sha256sum | cut -c1-16)"
    if ! docker image inspect "$tag" >/dev/null 2>&1; then
        log "building $tag"
        local ca=""
        if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
            ca="$(cat /usr/local/share/ca-certificates/*.crt)"
        fi
        context_tar | docker build --quiet --force-rm --label "launcher.cluster-image=box" \
            --build-arg EXTRA_CA_CERTS="$ca" -f scripts/cluster/box.Dockerfile -t "$tag" - >/dev/null
        # Older box images go (each is ~1 GB); one a cluster still runs on is kept by the engine.
        local old
        for old in $(docker images "$BOX_REPO" --format '{{.Repository}}:{{.Tag}}'); do
            [ "$old" = "$tag" ] || docker image rm "$old" >/dev/null 2>&1 || true
        done
    fi
    printf '%s' "$tag"
}

db_image() {
    if ! docker image inspect "$DB_IMAGE" >/dev/null 2>&1; then
        log "building $DB_IMAGE from images/postgres"
        docker build --quiet --force-rm -t "$DB_IMAGE" "$ROOT/images/postgres" >/dev/null
    fi
}

# -- the parts ------------------------------------------------------------------------------------

db_ready() { docker exec "$DB" pg_isready -q -h 127.0.0.1 -U launcher; }
engine_ready() { docker exec "$1" docker info; }
forge_ready() {
    docker exec "$FORGE" python3 -c "
import urllib.request, urllib.error
try:
    urllib.request.urlopen('http://127.0.0.1:$FORGE_PORT/', timeout=2)
except urllib.error.HTTPError as e:
    raise SystemExit(0 if e.code == 401 else 1)
"
}

secret() { head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n'; }

start_db() {
    docker run -d --name "$DB" --hostname db --label "$LABEL" --label launcher.cluster.role=db \
        --network "$COORD_NET" --network-alias db \
        -e POSTGRES_USER=launcher -e POSTGRES_PASSWORD="$(cat "$STATE_DIR/db-password")" -e POSTGRES_DB=launcher \
        "$DB_IMAGE" >/dev/null
}

start_forge() {
    local image="$1"
    docker create --name "$FORGE" --hostname forge --label "$LABEL" --label launcher.cluster.role=forge \
        --network "$FORGE_NET" --network-alias forge "$image" \
        python3 /opt/cluster/forgekit.py serve --host 0.0.0.0 --port "$FORGE_PORT" --root /srv/forge \
        --user "$(cat "$STATE_DIR/forge-user")" --token-file /etc/forge-token >/dev/null
    docker cp "$STATE_DIR/forge-token" "$FORGE:/etc/forge-token"
    docker start "$FORGE" >/dev/null
}

# A bare repository on the forge with one commit on main: what the tests' tasks start from.
make_demo_repo() {
    docker exec -i "$FORGE" sh -eu -s "$DEMO_REPO" <<'EOF'
repo="/srv/forge/$1.git"
git init --quiet --bare --initial-branch=main "$repo"
git -C "$repo" config http.receivepack true
work=$(mktemp -d)
git -C "$work" init --quiet -b main
printf '# %s\nThe test cluster'"'"'s demo repository.\n' "$1" >"$work/README.md"
git -C "$work" add README.md
git -C "$work" -c user.name=cluster -c user.email=cluster@example.invalid commit --quiet -m "initial commit"
git -C "$work" push --quiet "$repo" main
rm -rf "$work"
EOF
}

box_config() {
    cat <<EOF
# The box's launcher.toml (scripts/cluster.sh): the shared coordinator, the forge, no network for runs.
state_url = "$(coordinator_url db)"

[network]
mode = "none"

[publish]
push = true
remote = "origin"
token_env = "FORGE_TOKEN"
token_user = "$(cat "$STATE_DIR/forge-user")"
EOF
    if [ -n "$BOX_CPUS" ]; then
        # A run may not ask for more CPU than its box has: under cgroup v1 the kernel refuses a
        # container's CPU quota above its parent's (the box's), and the run would not start.
        cat <<EOF

[run]
cpus = $(awk -v c="$BOX_CPUS" 'BEGIN { c += 0; printf "%g", (c < 1 ? c : 1) }')
EOF
    fi
}

# The box engine's storage: a volume, so that it sits on this host's own file system (overlay2
# works there; on the box's root, itself an overlay, only vfs would, at ~35 s per container).
box_volume() {
    local volume="$NAME-box$1-docker"
    docker volume create --label "$LABEL" "$volume" >/dev/null
    printf '%s' "$volume"
}

create_box() {
    local i="$1" image="$2" name="$NAME-box$1"
    local limits=()
    [ -z "$BOX_CPUS" ] || limits=(--cpus "$BOX_CPUS")
    docker create --name "$name" --hostname "$name" --label "$LABEL" --label launcher.cluster.role=box \
        --label "launcher.cluster.box=$i" ${limits[@]+"${limits[@]}"} \
        --cgroupns=private --cap-add ALL --cap-drop SYS_RESOURCE \
        --security-opt seccomp=unconfined --security-opt apparmor=unconfined --security-opt systempaths=unconfined \
        -e "CLUSTER_STORAGE_DRIVER=${CLUSTER_STORAGE_DRIVER:-}" \
        --mount "type=volume,source=$(box_volume "$i"),target=/var/lib/docker" \
        --network "$COORD_NET" "$image" >/dev/null
    docker network connect "$FORGE_NET" "$name"
    local files
    files="$(mktemp -d)"
    box_config >"$files/launcher.toml"
    cp "$STATE_DIR/forge-token" "$files/forge-token"
    cp "$STATE_DIR/forge-user" "$files/forge-user"
    docker cp "$files/forge-token" "$name:/etc/launcher/forge-token"
    docker cp "$files/forge-user" "$name:/etc/launcher/forge-user"
    docker cp "$files/launcher.toml" "$name:$CASE_ROOT_IN_BOX/launcher.toml"
    rm -rf "$files"
    docker start "$name" >/dev/null
}

# The box's engine up, the launcher images in it, its case root initialised.
provision_box() {
    local name="$1" images_tar="$2"
    wait_until "the engine of $name" "$READY_TIMEOUT_S" engine_ready "$name"
    docker exec -i "$name" docker load -q <"$images_tar" >/dev/null
    docker exec "$name" sh -c 'chmod 0600 /etc/launcher/forge-token && launcher init --json' >/dev/null
}

coordinator_url() {
    printf 'postgresql://launcher:%s@%s:5432/launcher' "$(cat "$STATE_DIR/db-password")" "$1"
}

db_address() {
    docker inspect -f "{{with index .NetworkSettings.Networks \"$COORD_NET\"}}{{.IPAddress}}{{end}}" "$DB"
}

print_env() {
    [ -d "$STATE_DIR" ] || die "cluster $NAME is not up (no $STATE_DIR)"
    local boxes ip
    boxes="$(docker ps -a --filter "label=$LABEL" --filter label=launcher.cluster.role=box \
        --format '{{.Label "launcher.cluster.box"}} {{.Names}}' | sort -n | cut -d' ' -f2 | tr '\n' ' ')"
    echo "CLUSTER_NAME=$NAME"
    echo "COORDINATOR_URL=$(coordinator_url db)"
    ip="$(db_address)"
    # The db's bridge address answers from this host too (Linux routes to every local bridge).
    if [ -n "$ip" ] && timeout 3 bash -c ": </dev/tcp/$ip/5432" 2>/dev/null; then
        echo "COORDINATOR_URL_HOST=$(coordinator_url "$ip")"
    fi
    echo "FORGE_URL=http://forge:$FORGE_PORT"
    echo "FORGE_USER=$(cat "$STATE_DIR/forge-user")"
    echo "FORGE_TOKEN_FILE=$STATE_DIR/forge-token"
    echo "DEMO_REPO=$DEMO_REPO"
    echo "DEMO_REPO_URL=http://forge:$FORGE_PORT/$DEMO_REPO.git"
    echo "BOX_CASE_ROOT=$CASE_ROOT_IN_BOX"
    echo "DB_CONTAINER=$DB"
    echo "FORGE_CONTAINER=$FORGE"
    echo "COORD_NETWORK=$COORD_NET"
    echo "FORGE_NETWORK=$FORGE_NET"
    echo "STATE_DIR=$STATE_DIR"
    echo "BOX_IMAGE=$(docker inspect -f '{{.Config.Image}}' "$FORGE" 2>/dev/null || true)"
    echo "BOXES=${boxes% }"
}

# -- commands -------------------------------------------------------------------------------------

cmd_up() {
    local n="${1:-}"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "usage: cluster.sh up N (N >= 1 boxes)"
    if [ -n "$BOX_CPUS" ] && ! [[ "$BOX_CPUS" =~ ^[0-9]*\.?[0-9]+$ && "$BOX_CPUS" =~ [1-9] ]]; then
        die "CLUSTER_BOX_CPUS must be a positive number of CPUs (e.g. 0.5 or 2), not '$BOX_CPUS'"
    fi
    if [ -n "$(docker ps -aq --filter "label=$LABEL")" ]; then
        die "cluster $NAME is already up (or half-made): scripts/cluster.sh down first, or pick another CLUSTER_NAME"
    fi
    local image="${CLUSTER_BOX_IMAGE:-}"
    if [ -n "$image" ]; then
        docker image inspect "$image" >/dev/null 2>&1 || die "CLUSTER_BOX_IMAGE $image is not on this engine"
    else
        image="$(box_image)"
    fi
    db_image
    for img in $BOX_IMAGES; do
        docker image inspect "$img" >/dev/null 2>&1 || die "$img is not on this engine: launcher image build"
    done
    mkdir -p "$STATE_DIR"
    chmod 0700 "$STATE_DIR"
    secret >"$STATE_DIR/db-password"
    echo "forge-$(secret | cut -c1-6)" >"$STATE_DIR/forge-user"
    echo "cluster-$(secret)" >"$STATE_DIR/forge-token"
    chmod 0600 "$STATE_DIR"/*

    # Internal: the cluster's parts reach one another, never the outside (this host still can).
    docker network create --internal --label "$LABEL" "$COORD_NET" >/dev/null
    docker network create --internal --label "$LABEL" "$FORGE_NET" >/dev/null
    start_db
    start_forge "$image"
    local i
    for ((i = 1; i <= n; i++)); do
        create_box "$i" "$image"
    done
    # Saved once, loaded into every box at the same time.
    # shellcheck disable=SC2086
    docker save $BOX_IMAGES -o "$STATE_DIR/images.tar"
    local pids=()
    for ((i = 1; i <= n; i++)); do
        provision_box "$NAME-box$i" "$STATE_DIR/images.tar" &
        pids+=($!)
    done
    wait_until "the coordinator" "$READY_TIMEOUT_S" db_ready
    wait_until "the forge" "$READY_TIMEOUT_S" forge_ready
    make_demo_repo
    local failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    rm -f "$STATE_DIR/images.tar"
    ((failed == 0)) || die "a box could not be provisioned (see above); scripts/cluster.sh down cleans up"
    print_env
}

cmd_down() {
    local ids
    ids="$(docker ps -aq --filter "label=$LABEL")"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker rm -f -v $ids >/dev/null
    fi
    ids="$(docker network ls -q --filter "label=$LABEL")"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker network rm $ids >/dev/null
    fi
    ids="$(docker volume ls -q --filter "label=$LABEL")"
    if [ -n "$ids" ]; then
        # shellcheck disable=SC2086
        docker volume rm -f $ids >/dev/null
    fi
    rm -rf "$STATE_DIR"
}

cmd_status() {
    docker ps -a --filter "label=$LABEL" --format '{{.Names}}\t{{.Status}}\t{{.Networks}}' | sort
}

cmd_skew() {
    local name seconds="${2:-}"
    name="$(box_name "${1:-}")"
    [[ "$seconds" =~ ^[+-]?[0-9]+$ ]] || die "usage: cluster.sh skew I SECONDS (e.g. 300 or -300; 0 removes it)"
    seconds=$((seconds))
    if ((seconds == 0)); then
        docker exec "$name" rm -f /etc/launcher/skew
    else
        # libfaketime's relative form: "+300" or "-300" seconds from the real clock.
        printf '%+d\n' "$seconds" | docker exec -i "$name" sh -c 'cat >/etc/launcher/skew'
    fi
}

main() {
    local cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
        -h | --help | help | "") usage ;;
        up) cmd_up "$@" ;;
        env) print_env ;;
        image) box_image && echo ;;
        box)
            local name
            name="$(box_name "${1:-}")"
            shift
            [ "${1:-}" = "--" ] && shift
            [ $# -gt 0 ] || die "usage: cluster.sh box I -- CMD..."
            exec docker exec -i "$name" "$@"
            ;;
        kill) docker kill "$(box_name "${1:-}")" >/dev/null ;;
        restart)
            local name
            name="$(box_name "${1:-}")"
            docker start "$name" >/dev/null
            wait_until "the engine of $name" "$READY_TIMEOUT_S" engine_ready "$name"
            ;;
        pause) docker pause "$(box_name "${1:-}")" >/dev/null ;;
        unpause) docker unpause "$(box_name "${1:-}")" >/dev/null ;;
        cut) docker network disconnect "$COORD_NET" "$(box_name "${1:-}")" ;;
        heal) docker network connect "$COORD_NET" "$(box_name "${1:-}")" ;;
        restart-db)
            docker restart -t 10 "$DB" >/dev/null
            wait_until "the coordinator" "$READY_TIMEOUT_S" db_ready
            ;;
        sql)
            [ $# -eq 1 ] || die "usage: cluster.sh sql QUERY"
            exec docker exec -i "$DB" psql -X -q -A -t -F $'\t' -v ON_ERROR_STOP=1 -U launcher -d launcher -c "$1"
            ;;
        skew) cmd_skew "$@" ;;
        status) cmd_status ;;
        down) cmd_down ;;
        *)
            usage >&2
            exit 2
            ;;
    esac
}

main "$@"

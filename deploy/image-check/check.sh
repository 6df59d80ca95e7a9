#!/usr/bin/env bash
# deploy/image-check/check.sh: build the knd image from ./Dockerfile WITHOUT Docker and run it.
#
#   sudo deploy/image-check/check.sh [WORKDIR]      # WORKDIR default /tmp/knd-image-check
#   KND_IMAGE_CHECK_FRESH=1  ...   redo the debootstrap base too (otherwise reused)
#   KND_IMAGE_CHECK_SKIP_UP=1 ...  skip the `knd up --standalone` run in a netns
#   KND_IMAGE_CHECK_MIRROR=URL     Debian mirror for debootstrap (deb.debian.org)
#   KND_IMAGE_CHECK_CA=FILE|none   CA bundle for the build's RUN steps, for networks that
#                                  intercept TLS (default: the host's bundle when the host
#                                  has local CAs in /usr/local/share/ca-certificates)
#
# For machines with no Docker engine and no Docker Hub. minibuild.py (beside this file)
# interprets the Dockerfile itself: ARG/FROM/ENV/WORKDIR/COPY [--from]/RUN/USER/
# ENTRYPOINT/CMD, each stage in a fresh copy of the base, RUN as `/bin/sh -c` with the
# stage's Env, User and WorkingDir, COPY from the build context as .dockerignore filters it
# (moby/patternmatcher's rules, re-implemented), so a change to either file is checked
# without editing this script. Root needed (debootstrap, chroot, namespaces); needs
# debootstrap (apt-get install debootstrap), util-linux unshare, iproute2, python3 >= 3.8.
#
# How faithful it is:
#  - The base is NOT python:3.11-slim-bookworm. It is `debootstrap --variant=minbase
#    bookworm` plus Debian's python3 (3.11.2, /usr/bin/python3; python-is-python3 gives
#    `python`), python3-venv, ca-certificates, netbase, tzdata, with debian:bookworm-slim's
#    apt sources and (approximately) its slim dpkg path-excludes. The official image has
#    its own CPython 3.11.x (latest patch) in /usr/local, whose ensurepip bundles a newer
#    pip; its venv's bin/python points at /usr/local/bin/python, here at /usr/bin/python.
#    Same Debian release, glibc and apt repositories; same cp311 manylinux wheels.
#  - RUN steps run as root with all capabilities, in the host's network namespace (like
#    `docker build`'s default network), with the host's /etc/resolv.conf; pip reaches
#    PyPI directly (env -i: the host's PIP_* settings and pip.conf do not leak in). Where
#    the host trusts local CAs (a TLS-intercepting proxy), RUN steps get the host's CA
#    bundle bind-mounted over the rootfs's and PIP_CERT/REQUESTS_CA_BUNDLE/SSL_CERT_FILE;
#    a real `docker build` on such a network needs the same (KND_IMAGE_CHECK_CA).
#  - `run` (docker run, roughly): the final stage's rootfs via chroot, its Env, User (or
#    --user), Entrypoint + Cmd, as pid 1 of a fresh pid namespace with private mounts
#    (/proc, a read-only sysfs, /dev bound from the host). No seccomp/AppArmor, no
#    capability drop, no cgroup limits, no read-only rootfs, no image layers or
#    metadata (docker inspect), no overlayfs (a copy instead).
# What it checks: every Dockerfile instruction succeeds (the build stage's own checks
# included: the import of the generated gRPC modules from / and `knd --help`), then in the
# runtime rootfs: the default command (ENTRYPOINT+CMD as uid 65532) lists all four
# services, topology (host /sys and a captured fixture), bus-config, each service's
# --help, the generated pb modules (one _pb2 + _pb2_grpc per protos/*.proto, nothing
# stale; the _pb2 ones import), pci.ids readable by discovery, the user/dirs/owners the
# Dockerfile makes, the `rdma` tool, no grpcio-tools in the venv, `knd up --standalone
# --help` as root, `knd bus-config` writing /run/knd/bus as 65532 (the compose flow), and
# `knd up --standalone` as root in a throwaway network namespace (a veth pair to discover)
# twice: with knd as pid 1 (`docker run IMAGE up ...`) and under an init (`docker run
# --init`): every service's /readyz, `knd status`, a ResourceSlice file, a clean exit 0
# within 10 s of SIGTERM (what `docker stop` does).
# Each step: PASS, FAIL, or WARN (a known difference of this base, not of the image: the
# topology capture needs tarfile's extraction filters, which Debian's 3.11.2 lacks).
# Exit status: 0 when no step failed, 1 otherwise, 2 when it cannot run here.
# Logs, the context as .dockerignore lets it through, the stages' rootfs: under WORKDIR.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=$(realpath -m "${1:-${KND_IMAGE_CHECK_WORK:-/tmp/knd-image-check}}")
MIRROR=${KND_IMAGE_CHECK_MIRROR:-http://deb.debian.org/debian}
LOGS=$WORK/logs
NS=knd-image-check-$$
UP_PID=
NS_MADE=
STEP_PID=

if [ "$(id -u)" != 0 ]; then echo "check.sh: run as root (debootstrap, chroot, namespaces)" >&2; exit 2; fi
for tool in debootstrap unshare ip chroot python3 realpath; do
  command -v "$tool" >/dev/null || { echo "check.sh: $tool missing (apt-get install debootstrap util-linux iproute2 python3)" >&2; exit 2; }
done
PY=$(python3 -c 'import sys; print(sys.executable)')
MB=("$PY" "$HERE/minibuild.py" --work "$WORK")
mkdir -p "$WORK" && rm -rf "$LOGS" && mkdir -p "$LOGS"

descendants() {   # every process below PID, from /proc's children lists
  local c
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$c"; descendants "$c"
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [ -n "$STEP_PID" ] && kill -0 "$STEP_PID" 2>/dev/null; then
    # the running step and every process it started, by pid: TERM, then KILL after 5 s
    local tree i
    tree=$(descendants "$STEP_PID")
    echo "check.sh: stopping the running step (pids $STEP_PID $(echo $tree))" >&2
    kill -TERM "$STEP_PID" $tree 2>/dev/null
    for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$STEP_PID" $tree 2>/dev/null || break; sleep 0.5; done
    kill -KILL "$STEP_PID" $tree 2>/dev/null
    wait "$STEP_PID" 2>/dev/null
  fi
  if [ -n "$UP_PID" ] && kill -0 "$UP_PID" 2>/dev/null; then
    kill -KILL "$UP_PID" 2>/dev/null   # unshare --kill-child: its pid namespace goes with it
    wait "$UP_PID" 2>/dev/null
  fi
  [ -n "$NS_MADE" ] && ip netns del "$NS" 2>/dev/null
  # any process still running inside one of this run's root file systems (started here)
  local p r
  for p in /proc/[0-9]*; do
    r=$(readlink "$p/root" 2>/dev/null) || continue
    [[ $r == "$WORK"/* ]] && kill -KILL "${p#/proc/}" 2>/dev/null
  done
  # minibuild mounts only in private mount namespaces; this sweeps anything left under
  # WORK all the same (an interrupted debootstrap leaves its /proc and /sys mounted)
  awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/self/mounts | sort -r |
    while read -r m; do umount -R "$m" 2>/dev/null || umount -l "$m"; done
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

declare -a SUMMARY=()
FAILED=0
N=0
now() { date +%s.%N; }

# step NAME FUNCTION [ARGS]: run it under `set -e` in a subshell, output to a log file
step() {
  local name=$1; shift
  N=$((N + 1))
  local log; log=$LOGS/$(printf '%02d' "$N")-${name//[^A-Za-z0-9_.-]/_}.log
  local t0 rc status dt
  t0=$(now)
  printf '== %-62s ' "$name"
  ( set -eEuo pipefail
    trap 'echo "check.sh: failed (exit $?) at line $LINENO: $BASH_COMMAND" >&2' ERR
    "$@" ) >"$log" 2>&1 </dev/null &
  STEP_PID=$!
  wait "$STEP_PID"
  rc=$?
  STEP_PID=
  dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN {printf "%.1f", b - a}')
  if [ "$rc" = 0 ]; then status=PASS; elif [ "$rc" = 3 ]; then status=WARN; else status=FAIL; FAILED=1; fi
  echo "$status (${dt}s)"
  SUMMARY+=("$(printf '%-4s %7ss  %s' "$status" "$dt" "$name")")
  if [ "$status" = WARN ]; then
    grep '^WARN: ' "$log" | sed 's/^/   /'
  elif [ "$status" = FAIL ]; then
    echo "   exit $rc; the end of $log:"
    tail -n 30 "$log" | sed 's/^/   | /'
  fi
  [ "$status" != FAIL ]
}
skip() { SUMMARY+=("$(printf 'SKIP %7s   %s (%s)' - "$1" "$2")"); echo "== $1: SKIPPED ($2)"; }

mbrun() { "${MB[@]}" run "$@"; }
rootfs() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["rootfs"])' "$WORK/image.json"; }
stage_root() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["stages"][sys.argv[2]])' "$WORK/image.json" "$1"; }

# ---- the checks ---------------------------------------------------------------------------

check_base() { "${MB[@]}" base --mirror "$MIRROR" ${KND_IMAGE_CHECK_FRESH:+--fresh}; }

BUILD_CA=${KND_IMAGE_CHECK_CA:-}
if [ -z "$BUILD_CA" ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  BUILD_CA=$(realpath /etc/ssl/certs/ca-certificates.crt)
fi
[ "$BUILD_CA" = none ] && BUILD_CA=

check_build() {
  "${MB[@]}" build --context "$REPO" --dockerfile "$REPO/Dockerfile" ${BUILD_CA:+--build-ca "$BUILD_CA"}
}

check_default_command() {   # docker run knd:0.1.0  ->  knd --help as 65532:65532
  local out; out=$(mbrun)
  echo "$out"
  local listed; listed=$(grep -o '{[a-z,-]*}' <<<"$out" | head -n1)
  echo "subcommands: $listed"
  local want
  for want in up discovery publisher plumber kubelet-gateway demo events status topology bus-config; do
    [[ ",${listed//[\{\}]/}," == *",$want,"* ]] || { echo "MISSING subcommand: $want"; return 1; }
  done
}

check_identity() {
  local out; out=$(mbrun --entrypoint id)
  echo "$out"
  [ "$out" = "uid=65532(knd) gid=65532(knd) groups=65532(knd)" ]
}

check_topology_sys() { mbrun -- topology --sysfs-root /sys; }

check_topology_fixture() {
  local root; root=$(rootfs)
  install -m 0644 "$REPO/tests/topology/hardware/h100-vm/sysfs.tar.gz" "$root/tmp/h100-vm-sysfs.tar.gz"
  local out rc=0
  out=$(mbrun -- topology --sysfs-root /tmp/h100-vm-sysfs.tar.gz 2>&1) || rc=$?
  rm -f "$root/tmp/h100-vm-sysfs.tar.gz"
  echo "$out"
  if [ "$rc" != 0 ] && grep -q "extractall() got an unexpected keyword argument 'filter'" <<<"$out" &&
     ! chroot "$root" /usr/bin/python3 -c 'import tarfile; tarfile.data_filter' 2>/dev/null; then
    echo "WARN: this base's Debian python $(chroot "$root" /usr/bin/python3 -c 'import platform; print(platform.python_version())') has no tarfile extraction filters (3.11.4+);"
    echo "WARN: the real image's 3.11.x has them. knd on Debian bookworm's own python3 fails here."
    return 3
  fi
  [ "$rc" = 0 ]
  grep -q '^GPU0 ' <<<"$out" && grep -q '10de:2330' <<<"$out" && grep -q 'NIC0: eth0' <<<"$out"
}

check_bus_config_help() { mbrun -- bus-config --help; }

check_services_help() {
  local s
  for s in discovery publisher plumber kubelet-gateway; do
    echo "--- knd $s --help"
    mbrun -- "$s" --help
  done
}

check_generated_modules() {
  local expected=() p
  for p in "$WORK"/context/protos/*.proto; do
    p=$(basename "$p" .proto); expected+=("${p}_pb2" "${p}_pb2_grpc")
  done
  local out
  out=$(mbrun --entrypoint python -- -c '
import importlib, pkgutil, sys
import services.kubelet_gateway.grpc_server
import services.kubelet_gateway.pb as pb
print("pb at", pb.__path__[0], file=sys.stderr)
assert pb.__path__[0].startswith("/opt/knd/lib/"), pb.__path__
for m in sorted(pkgutil.iter_modules(pb.__path__), key=lambda m: m.name):
    # the *_pb2_grpc modules import their *_pb2 top-level: knd never imports them
    # (services/kubelet_gateway/dra.py); the *_pb2 modules must import
    if m.name.endswith("_pb2"):
        importlib.import_module("services.kubelet_gateway.pb." + m.name)
    print(m.name)
')
  echo "installed: $(tr '\n' ' ' <<<"$out")"
  local want=$(printf '%s\n' "${expected[@]}" | sort)
  echo "expected:  $(tr '\n' ' ' <<<"$want")"
  [ "$out" = "$want" ] || { echo "generated modules differ from protos/*.proto"; return 1; }
}

check_pci_ids() {
  mbrun --entrypoint python -- -c '
from services.kernel.sysfs import SYSTEM_PCI_IDS
from services.kernel.pciids import load_pci_ids
path = next(p for p in SYSTEM_PCI_IDS if p.exists())
ids = load_pci_ids(str(path))
print(path, len(ids.vendors), "vendors,", len(ids.devices), "devices")
print("15b3:", ids.vendors["15b3"], "| 10de:2330:", ids.devices[("10de", "2330")])
assert len(ids.vendors) > 1000
'
}

check_layout() {   # what the runtime stage's RUN lines make, as root
  local out
  out=$(mbrun --user 0 --entrypoint /bin/sh -- -c '
getent passwd knd; getent group knd
stat -c "%n %u:%g %a" /run/knd /run/knd/bus /var/lib/knd /opt/knd
command -v ip; command -v rdma
rdma -V; ip -V
test -s /usr/share/misc/pci.ids && echo "pci.ids ok"
ls /var/lib/apt/lists | grep -v "^lock$\|^partial$\|^auxfiles$" | head -n 3 || true')
  echo "$out"
  local line
  for line in "knd:x:65532:65532::/nonexistent:/usr/sbin/nologin" "knd:x:65532:" \
              "/run/knd 65532:65532 750" "/run/knd/bus 65532:65532 750" \
              "/var/lib/knd 0:0 755" "/opt/knd 0:0 755" "pci.ids ok"; do
    grep -qxF "$line" <<<"$out" || { echo "MISSING: $line"; return 1; }
  done
  grep -q '/rdma$' <<<"$out" || { echo "MISSING: rdma"; return 1; }
}

check_no_build_tools() {   # grpcio-tools is a build-system requirement only
  local out
  out=$(mbrun -e PIP_DISABLE_PIP_VERSION_CHECK=1 --entrypoint pip -- list --format=freeze)
  echo "$out" | tee "$LOGS/pip-freeze.txt"
  grep -qi '^knd==0.1.0$' <<<"$out"
  ! grep -qi '^grpcio[-_]tools==' <<<"$out"
}

check_up_help_root() { mbrun --user 0 -- up --standalone --help; }

check_bus_config_run() {   # compose: bus-config as 65532 into the image's /run/knd/bus
  local root; root=$(rootfs)
  mbrun -e KND_BUS_DIR=/run/knd/bus -e KND_BUS_PORT=9500 -- bus-config
  find "$root/run/knd/bus" -printf '%P %u:%g %m\n' | sort
  test -s "$root/run/knd/bus/nats/nats.conf"
  find "$root/run/knd/bus" -mindepth 1 -delete
}

ready_probe() {   # every service's /readyz in the netns: 0 when all four answer 200
  ip netns exec "$NS" "$PY" - <<'EOF'
import sys, urllib.request, urllib.error
bad = 0
for name, port in (("discovery", 9501), ("publisher", 9502), ("plumber", 9503),
                   ("kubelet-gateway", 9504)):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
            code, body = r.status, r.read().decode()[:200]
    except urllib.error.HTTPError as e:
        code, body = e.code, e.read().decode()[:200]
    except OSError as e:
        code, body = None, str(e)
    print(f"{name:16} {code} {body}")
    bad += code != 200
sys.exit(1 if bad else 0)
EOF
}

check_up_standalone() {   # MODE: pid1 (docker run IMAGE up ...) or init (docker run --init)
  local mode=$1 root; root=$(rootfs)
  # this runs in step's subshell: stop what it started however it ends
  trap 'if [ -n "$UP_PID" ]; then kill -KILL "$UP_PID" 2>/dev/null; wait "$UP_PID" 2>/dev/null; fi
        ip netns del "$NS" 2>/dev/null || true' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM HUP
  rm -rf "${root:?}/var/lib/knd/"*
  ip netns add "$NS"
  ip -n "$NS" link set lo up
  ip -n "$NS" link add knd-test0 type veth peer name knd-test1   # something to discover
  ip -n "$NS" link set knd-test0 up
  ip -n "$NS" link set knd-test1 up
  local log=$LOGS/knd-up-$mode.log init=()
  [ "$mode" = init ] && init=(--init)
  "${MB[@]}" run --netns "$NS" --user 0 "${init[@]}" -- up --standalone --filter true >"$log" 2>&1 &
  UP_PID=$!
  echo "knd up ($mode): unshare pid $UP_PID, log $log"
  local t0=$SECONDS ok= early=
  while [ $((SECONDS - t0)) -lt 60 ]; do
    kill -0 "$UP_PID" 2>/dev/null || { early=1; break; }
    if ready_probe >"$LOGS/readyz-$mode.txt" 2>&1; then ok=1; break; fi
    sleep 1
  done
  cat "$LOGS/readyz-$mode.txt"
  echo "all ready after $((SECONDS - t0))s: ${ok:-no}"
  if [ -n "$early" ]; then
    wait "$UP_PID" || echo "knd up exited early with $?"
    UP_PID=
    echo "--- knd up's log"; head -n 15 "$log"
    if grep -q 'nats-server exited with 1' "$log"; then
      echo "--- diagnosis: a child started through services.common.pdeathsig when its parent is pid 1"
      mbrun --user 0 --entrypoint /bin/sh -- -c \
        'python -m services.common.pdeathsig true; echo "pdeathsig under pid 1: exit $?"'
      echo "FAIL: services/common/pdeathsig.py exits 1 when os.getppid() == 1, i.e. for every"
      echo "      child of a supervisor that is itself pid 1 (knd up as a container's command):"
      echo "      nats-server and the services never start, knd up gives up after 10 s."
    fi
    return 1
  fi
  echo "--- knd status (root, in the netns)"
  local status_rc=0
  mbrun --netns "$NS" --user 0 -- status || status_rc=$?
  echo "--- standalone API objects"
  find "$root/var/lib/knd/api" -type f -printf '%P %s bytes\n' 2>/dev/null | sort | head -n 20
  local slices; slices=$(find "$root/var/lib/knd/api/resourceslices" -name '*.json' 2>/dev/null | wc -l)
  # stop it as docker stop does: SIGTERM to the container's pid 1, SIGKILL after 10 s
  local pid1; pid1=$(cat "/proc/$UP_PID/task/$UP_PID/children" 2>/dev/null | awk '{print $1}')
  echo "--- SIGTERM to pid 1 (host pid ${pid1:-?})"
  local t1=$SECONDS stopped=
  [ -n "$pid1" ] && kill -TERM "$pid1"
  while [ $((SECONDS - t1)) -lt 10 ]; do
    kill -0 "$UP_PID" 2>/dev/null || { stopped=1; break; }
    sleep 0.2
  done
  local up_rc=0
  if [ -n "$stopped" ]; then wait "$UP_PID" || up_rc=$?; else kill -KILL "$UP_PID"; wait "$UP_PID" || true; fi
  UP_PID=
  echo "stopped: ${stopped:-NO (killed after 10 s)} in $((SECONDS - t1))s, exit ${up_rc}"
  echo "--- the end of knd up's log"
  tail -n 40 "$log"
  rm -rf "${root:?}/var/lib/knd/"*
  [ -n "$ok" ] || { echo "FAIL: not every /readyz answered 200 within 60 s"; return 1; }
  [ "$status_rc" = 0 ] || { echo "FAIL: knd status exited $status_rc"; return 1; }
  [ "$slices" -ge 1 ] || { echo "FAIL: no ResourceSlice file under /var/lib/knd/api/resourceslices"; return 1; }
  [ -n "$stopped" ] || { echo "FAIL: pid 1 did not stop within 10 s of SIGTERM"; return 1; }
  [ "$up_rc" = 0 ] || { echo "FAIL: knd up exited $up_rc after SIGTERM"; return 1; }
  if grep -q 'Traceback' "$log"; then echo "FAIL: a traceback in knd up's log"; return 1; fi
}

# ---- run them -------------------------------------------------------------------------------

T0=$(now)
echo "knd image check: repo $REPO, work dir $WORK, logs $LOGS"
BUILT=
if step "base: debootstrap minbase bookworm + python3" check_base \
   && step "docker build (every Dockerfile instruction)" check_build; then
  BUILT=1
fi
if [ -f "$WORK/build-steps.tsv" ]; then
  echo "   Dockerfile instructions:"
  awk -F'\t' '{printf "     %-4s %6.1fs  [%s] %s\n", ($3 == "ok" ? "PASS" : $3), $4, $1, $5}' "$WORK/build-steps.tsv"
fi
RUNTIME_CHECKS=(
  "run: default command (ENTRYPOINT knd, CMD --help) as 65532|check_default_command"
  "run: USER is 65532:65532 (knd)|check_identity"
  "run: knd topology --sysfs-root /sys (65532)|check_topology_sys"
  "run: knd topology on the h100-vm sysfs capture (65532)|check_topology_fixture"
  "run: knd bus-config --help (65532)|check_bus_config_help"
  "run: knd <service> --help for the four services (65532)|check_services_help"
  "run: generated pb modules installed, one per proto (65532)|check_generated_modules"
  "run: pci.ids found and parsed by discovery (65532)|check_pci_ids"
  "run: knd user, /run/knd, /var/lib/knd, iproute2 rdma (root)|check_layout"
  "run: knd in the venv, grpcio-tools not (pip list)|check_no_build_tools"
  "run: knd up --standalone --help (root)|check_up_help_root"
  "run: knd bus-config into /run/knd/bus (65532, compose)|check_bus_config_run"
)
for entry in "${RUNTIME_CHECKS[@]}"; do
  if [ -n "$BUILT" ]; then step "${entry%%|*}" "${entry##*|}"; else skip "${entry%%|*}" "the build failed"; fi
done
UP_CHECKS=(
  "run: docker run IMAGE up --standalone: knd as pid 1 (netns, root)|pid1"
  "run: docker run --init IMAGE up --standalone (netns, root)|init"
)
for entry in "${UP_CHECKS[@]}"; do
  name=${entry%%|*}
  if [ -z "$BUILT" ]; then
    skip "$name" "the build failed"
  elif [ -n "${KND_IMAGE_CHECK_SKIP_UP:-}" ]; then
    skip "$name" "KND_IMAGE_CHECK_SKIP_UP set"
  elif ! ip netns add "$NS" 2>/dev/null; then
    skip "$name" "cannot create a network namespace here"
  else
    ip netns del "$NS"
    NS_MADE=1
    step "$name" check_up_standalone "${entry##*|}"
  fi
done

# ---- summary ------------------------------------------------------------------------------
echo
echo "==== summary ($(date -u +%Y-%m-%dT%H:%M:%SZ), total $(awk -v a="$T0" -v b="$(now)" 'BEGIN {printf "%.0f", b - a}')s)"
printf '%s\n' "${SUMMARY[@]}"
if [ -n "$BUILT" ]; then
  ROOT=$(rootfs)
  BUILD_ROOT=$(stage_root build 2>/dev/null || true)
  echo "python (runtime base):   $(chroot "$ROOT" /usr/bin/python3 --version 2>&1) (Debian's; the real image has its own 3.11.x)"
  echo "/opt/knd (runtime):      $(du -sh "$ROOT/opt/knd" | cut -f1) ($(du -sb "$ROOT/opt/knd" | cut -f1) bytes, $(find "$ROOT/opt/knd" -type f | wc -l) files)"
  [ -n "$BUILD_ROOT" ] && echo "/opt/knd (build stage):  $(du -sh "$BUILD_ROOT/opt/knd" | cut -f1)"
  echo "runtime rootfs:          $(du -sh --exclude=proc --exclude=sys --exclude=dev "$ROOT" | cut -f1) (base $(du -sh "$WORK/base" | cut -f1); the real python:3.11-slim-bookworm is ~125 MB unpacked)"
  echo "largest in /opt/knd/lib/python3.11/site-packages:"
  du -s "$ROOT"/opt/knd/lib/python3*/site-packages/* 2>/dev/null | sort -rn | head -n 6 |
    awk '{printf "  %6.1f MB  %s\n", $1 / 1024, $2}' | sed "s#$ROOT##"
fi
echo "logs: $LOGS"
if [ "$FAILED" = 0 ] && [ -n "$BUILT" ]; then echo "RESULT: PASS"; exit 0; fi
echo "RESULT: FAIL"
exit 1

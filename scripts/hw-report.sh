#!/usr/bin/env bash
# Gathers what knd sees of this node's hardware, for a bug report or to check
# knd's topology against nvidia-smi's:  scripts/hw-report.sh OUTDIR
#   topology.txt / topology.json / topology.svg  knd topology (GPU <-> NIC matrix)
#   sysfs.tar.gz      the parts of sysfs knd reads (no MACs, GUIDs or serials):
#                     `knd topology --sysfs-root sysfs.tar.gz` replays it anywhere
#   inventory.json    the devices discovery would publish (every interface)
#   nvidia-smi-topo.txt  nvidia-smi topo -m, where nvidia-smi exists
# KND names the command to run (default: knd; e.g. KND="python3 -m services.cli").
set -uo pipefail
out=${1:?usage: hw-report.sh OUTDIR}
knd=${KND:-knd}
mkdir -p "$out"
$knd topology --save-sysfs "$out/sysfs.tar.gz" --svg "$out/topology.svg" \
    >"$out/topology.txt" 2>&1
$knd topology --json >"$out/topology.json"
$knd discovery --once --filter true >"$out/inventory.json"
if command -v nvidia-smi >/dev/null; then
    nvidia-smi topo -m >"$out/nvidia-smi-topo.txt" 2>&1
fi
ls -l "$out"

#!/usr/bin/env bash
# podman with storage and settings of its own under .cache/engine/podman, for running the
# Kubernetes manifests as far as an engine can without a cluster (`podman kube play`, in the
# container tests). Never the system's podman storage. Every argument goes to podman:
#   scripts/podman.sh kube play --replace FILE.yaml
# The settings this kind of machine needs: runc (crun refuses cgroups v1 in hybrid mode) and
# rlimits no higher than the host's, or every container, the pod's infra one too, fails on
# setrlimit.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(pwd)/.cache/engine/podman
mkdir -p "$DIR"
files=$(ulimit -Hn)
{ [ "$files" = unlimited ] || [ "$files" -gt 65536 ]; } && files=65536
cat >"$DIR/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=$files:$files", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$DIR/containers.conf
exec podman --root "$DIR/root" --runroot "$DIR/run" --cgroup-manager cgroupfs "$@"

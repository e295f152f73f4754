#!/usr/bin/env bash
# Installs what the kernel-path test needs (tests/tools/kernel_paths.rs): Debian's qemu-user,
# whose qemu-x86_64 runs a program as another x86 CPU (an AVX2-only Haswell, an SSE4.1-only
# Nehalem) so that one machine exercises ONNX Runtime's integer kernels for several
# instruction sets; and a venv with onnxruntime and onnx for the probe script, pinned as in
# training/requirements.txt. Idempotent. Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v qemu-x86_64 >/dev/null 2>&1; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup-kernel-paths: qemu-x86_64 missing and apt-get unavailable (not root?)" >&2
  else
    echo "installing qemu-user from Debian" >&2
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends qemu-user >/dev/null
  fi
fi
scripts/pinned-venv.sh .cache/kernel-paths "onnxruntime==1.31.1" "onnx==1.23.2" "numpy==2.4.6"
echo "$(pwd)/.cache/kernel-paths/bin/python"

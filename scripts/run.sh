#!/usr/bin/env bash
# `make run`: builds and serves the bundled model, on the GPU when this machine has an NVIDIA
# driver, else on the CPU. Everything it needs is fetched into .cache/ first, once.
#   DEVICE=auto (default) | cpu | cuda   forces the choice; ARGS are passed to newscls.
#   DRY_RUN=1   prints the decision and the steps, and runs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

DEVICE=${DEVICE:-auto}
has_nvidia_gpu() {
  command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '
}
case "$DEVICE" in
  auto) if has_nvidia_gpu; then DEVICE=cuda; else DEVICE=cpu; fi ;;
  cpu|cuda) ;;
  *) echo "run: DEVICE must be auto, cpu or cuda, not '$DEVICE'" >&2; exit 2 ;;
esac

run() {
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "+ $*"; else "$@"; fi
}

echo "run: device $DEVICE"
run scripts/setup-build.sh
if [ "$DEVICE" = cuda ]; then
  # The GPU build lives in its own target folder, so switching devices does not rebuild.
  run env ORT_FLAVOR=gpu scripts/setup-onnxruntime.sh
  run scripts/setup-cuda.sh
  run cargo build --release --locked --features cuda --target-dir target/cuda
  export ORT_DYLIB_PATH=$PWD/.cache/onnxruntime-gpu/libonnxruntime.so.1.31.1
  export LD_LIBRARY_PATH=$PWD/.cache/cuda/lib:$PWD/.cache/onnxruntime-gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  run exec target/cuda/release/newscls --device cuda "$@"
else
  run scripts/setup-onnxruntime.sh
  run cargo build --release --locked
  run exec target/release/newscls --device cpu "$@"
fi

#!/usr/bin/env bash
# Fetches the CUDA 13 and cuDNN 9 libraries that onnxruntime-gpu 1.31.1's CUDA provider loads
# (cudart, cuBLAS/cuBLASLt, nvJitLink, cuRAND, cuFFT, cuDNN) from NVIDIA's own PyPI wheels into
# .cache/cuda/lib, so a machine with only the NVIDIA driver can serve on its GPU: no CUDA
# toolkit, no root. Idempotent. The set is CUDA 13.0 Update 2 (the R580 driver runs it).
#   DRY_RUN=1 prints what it would fetch and where, and changes nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=(
  nvidia-cuda-runtime==13.0.96
  nvidia-cublas==13.1.0.3
  nvidia-nvjitlink==13.0.88
  nvidia-curand==10.4.0.35
  nvidia-cufft==12.0.0.61
  nvidia-cudnn-cu13==9.13.1.26
)
DEST=.cache/cuda/lib
STAMP=.cache/cuda/installed

if [ "${DRY_RUN:-0}" = 1 ]; then
  echo "setup-cuda: would fetch ${WHEELS[*]} from PyPI and unpack their nvidia/*/lib/*.so* into $DEST"
  exit 0
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "${WHEELS[*]}" ]; then
  exit 0
fi
mkdir -p .cache/wheels "$DEST"
echo "setup-cuda: fetching the CUDA 13 / cuDNN 9 runtime libraries from PyPI (about 1.5 GB, once)"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 "${WHEELS[@]}" -d .cache/wheels
for spec in "${WHEELS[@]}"; do
  name=${spec%%==*}; version=${spec##*==}
  wheel=$(ls .cache/wheels/"${name//-/_}"-"$version"-*.whl | head -n 1)
  python3 - "$wheel" "$DEST" <<'PY'
import os, re, sys, zipfile
wheel, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if re.match(r"nvidia/[^/]+(/[^/]+)?/lib/[^/]+\.so[.0-9]*$", name):
            target = os.path.join(dest, os.path.basename(name))
            with z.open(name) as src, open(target + ".partial", "wb") as out:
                out.write(src.read())
            os.replace(target + ".partial", target)
PY
done
echo "${WHEELS[*]}" > "$STAMP"
echo "setup-cuda: CUDA libraries in $DEST"

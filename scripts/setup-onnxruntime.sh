#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library from the official PyPI wheel into .cache/onnxruntime.
# Idempotent: does nothing when the library is already there. The version is pinned together
# with ort's `api-31` feature in Cargo.toml; change both or neither.
#   ORT_FLAVOR=gpu fetches onnxruntime-gpu (adds the CUDA provider library) instead.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=1.31.1
FLAVOR=${ORT_FLAVOR:-cpu}
DEST=.cache/onnxruntime
LIB="$DEST/libonnxruntime.so.$VERSION"
PACKAGE=onnxruntime
[ "$FLAVOR" = gpu ] && PACKAGE=onnxruntime-gpu && DEST=.cache/onnxruntime-gpu && LIB="$DEST/libonnxruntime.so.$VERSION"

if [ -f "$LIB" ]; then
  exit 0
fi
mkdir -p .cache/wheels "$DEST"
echo "fetching $PACKAGE==$VERSION from PyPI"
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  "$PACKAGE==$VERSION" -d .cache/wheels
WHEEL=$(ls .cache/wheels/"${PACKAGE//-/_}"-"$VERSION"-*.whl | head -n 1)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
python3 - "$WHEEL" "$TMP" <<'PY'
import sys, zipfile
wheel, out = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/libonnxruntime"):
            z.extract(name, out)
PY
mv "$TMP"/onnxruntime/capi/libonnxruntime* "$DEST/"
ln -sf "libonnxruntime.so.$VERSION" "$DEST/libonnxruntime.so"
echo "ONNX Runtime $VERSION ($FLAVOR) in $DEST"

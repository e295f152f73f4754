#!/usr/bin/env bash
# Installs the clients other servers' users already have, for the protocol tests:
# huggingface_hub (InferenceClient, TEI's and the HF Inference API's client) and tritonclient
# (KServe v2 / Open Inference Protocol), pinned, into .cache/pyclients. Idempotent.
# Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/pyclients
PINS="huggingface_hub==2.4.0 tritonclient[http]==2.73.0"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/pins" 2>/dev/null)" != "$PINS" ]; then
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet $PINS
  echo "$PINS" > "$VENV/pins"
fi
echo "$(pwd)/$VENV/bin/python"

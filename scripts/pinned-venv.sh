#!/usr/bin/env bash
# A Python venv at DIR holding exactly PINS (pip requirement specifiers), for the test tools.
# Idempotent: a venv whose recorded pins match is left alone; changed pins reinstall it.
#   scripts/pinned-venv.sh DIR PIN [PIN ...]
set -euo pipefail
VENV=$1
shift
PINS="$*"
if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$VENV/pins" 2>/dev/null)" != "$PINS" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "$@"
  echo "$PINS" > "$VENV/pins"
fi

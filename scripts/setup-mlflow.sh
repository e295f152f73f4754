#!/usr/bin/env bash
# Installs a pinned MLflow server (tracking, model registry, artifact proxy, OTLP trace intake)
# into .cache/mlflow for the tests that need a real one: traces over OTLP, and models served from
# its registry. Idempotent. Prints the venv's bin folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.cache/mlflow
PINS="mlflow[auth]==3.17.2"
if [ ! -x "$VENV/bin/mlflow" ] || [ "$(cat "$VENV/pins" 2>/dev/null)" != "$PINS" ]; then
  python3 -m venv "$VENV"
  # shellcheck disable=SC2086
  "$VENV/bin/pip" install --quiet $PINS
  echo "$PINS" > "$VENV/pins"
fi
echo "$(pwd)/$VENV/bin"

#!/usr/bin/env bash
# Installs a pinned MLflow server (tracking, model registry, artifact proxy, OTLP trace intake)
# into .cache/mlflow for the tests that need a real one: traces over OTLP, and models served from
# its registry. Idempotent. Prints the venv's bin folder.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/pinned-venv.sh .cache/mlflow "mlflow[auth]==3.17.2"
echo "$(pwd)/.cache/mlflow/bin"

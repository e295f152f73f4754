#!/usr/bin/env bash
# Installs schemathesis (PyPI, pinned) into .cache/schemathesis for the OpenAPI contract test
# (tests/tools/contract.rs) and scripts/schemathesis.sh. Idempotent. Prints its executable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/pinned-venv.sh .cache/schemathesis "schemathesis==4.32.5"
echo "$(pwd)/.cache/schemathesis/bin/schemathesis"

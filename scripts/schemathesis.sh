#!/usr/bin/env bash
# Property-based testing of the OpenAPI contract with schemathesis against a fresh release
# newscls: every check on every operation (5xx, schema-valid requests rejected, schema-invalid
# ones accepted, responses and headers not as documented, undeclared methods), with the admin
# token set and the served model's name on the KServe routes (tests/contract/schemathesis.toml).
# `make test` runs the same contract with a fixed seed and 100 examples per operation
# (tests/tools/contract.rs); this script is for longer runs with a random seed:
#   scripts/schemathesis.sh [--max-examples N] [--seed S] [other schemathesis options]
set -euo pipefail
cd "$(dirname "$0")/.."
SCHEMATHESIS=$(scripts/setup-schemathesis.sh)
scripts/setup-onnxruntime.sh
cargo build --release --locked --quiet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export NEWSCLS_ADMIN_TOKEN="contract-token-$RANDOM$RANDOM$RANDOM" NEWSCLS_MODEL_NAME=news-topic-e5-small
NEWSCLS__SERVER__ADMIN_TOKEN=$NEWSCLS_ADMIN_TOKEN \
  ./target/release/newscls --host 127.0.0.1 --port "$PORT" --log-level warn >/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until ./target/release/newscls --probe "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do sleep 0.1; done
"$SCHEMATHESIS" --config-file tests/contract/schemathesis.toml run "http://127.0.0.1:$PORT/openapi.json" \
  --checks all --workers 1 --max-examples 300 "$@"

#!/usr/bin/env bash
# Property-based API testing of the OpenAPI contract with schemathesis (PyPI), against a fresh
# newscls. Every check on: 5xx, schema-valid requests rejected, responses not matching the spec,
# undeclared methods (405 + Allow), and so on. Not part of `make test` (it takes a minute).
#   scripts/schemathesis.sh [--max-examples N]
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .cache/schemathesis/bin/schemathesis ] || {
  python3 -m venv .cache/schemathesis
  .cache/schemathesis/bin/pip install --quiet schemathesis==4.32.5
}
scripts/setup-onnxruntime.sh
cargo build --release --locked --quiet
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/newscls --host 127.0.0.1 --port "$PORT" --log-level warn >/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until ./target/release/newscls --probe "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do sleep 0.1; done
.cache/schemathesis/bin/schemathesis run "http://127.0.0.1:$PORT/openapi.json" --checks all --workers 1 \
  --max-examples 300 "$@"

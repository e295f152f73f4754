#!/usr/bin/env bash
# KServe v2 through HTTP JSON, HTTP binary tensors and gRPC, side by side in one run, against a
# release newscls on this machine (bench/protocols.py; tritonclient's clients in threads).
#   SECONDS_PER_LOAD=15 CONCURRENCY=8 OUT=bench/results/protocols-<date> bench/protocols.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-15}
CONCURRENCY=${CONCURRENCY:-8}
OUT=${OUT:-bench/results/protocols-$(date +%F)}
mkdir -p "$OUT"
PYTHON=$(scripts/setup-pyclients.sh)
TEXTS=$(training/test_split.sh)
cargo build --release --locked --quiet
pick() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(pick); GRPC_PORT=$(pick)
./target/release/newscls --host 127.0.0.1 --port "$PORT" --grpc-port "$GRPC_PORT" --log-level warn >/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until ./target/release/newscls --probe "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do sleep 0.1; done
"$PYTHON" bench/protocols.py "127.0.0.1:$PORT" "127.0.0.1:$GRPC_PORT" news-topic-e5-small "$TEXTS" \
  "$SECONDS_PER_LOAD" "$CONCURRENCY" | tee "$OUT/protocols.md"
echo "machine: $(nproc) cores; $(date -u +%FT%TZ); $(git rev-parse --short HEAD)" | tee -a "$OUT/protocols.md"

#!/usr/bin/env bash
# make bench-gpu: the GPU benchmark, in one run on one GPU machine.
#   1. the in-process ceiling of the GPU variant (model_fp16.onnx), batch 1-256;
#   2. the service under wrk at c=64/256/1024, with one article per request and with 32;
#   3. the seed scenario (hey, 20 clients x 20 requests);
# printing texts/s, p50/p99, GPU utilisation (nvidia-smi) and CPU seconds per stage, with ratios
# to the ceiling. Results and the machine's description go to bench/results/gpu-<date>/.
#   DEVICE=cpu runs the same steps on the CPU (a smoke run of the harness; the figures are not
#   GPU figures). SECONDS_PER_LOAD (default 10), CONCURRENCY (default 64,256,1024).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-10}
CONCURRENCY=${CONCURRENCY:-64,256,1024}
OUT_SET=${OUT:-}
OUT=${OUT:-bench/results/gpu-$(date +%Y-%m-%d)}
[ "$DEVICE" = cpu ] && [ -z "${OUT_SET:-}" ] && OUT=${OUT/gpu-/gpu-smoke-cpu-}
mkdir -p "$OUT" bench/.cache

if [ "$DEVICE" = cuda ]; then
  nvidia-smi -L >/dev/null 2>&1 || { echo "bench-gpu: no NVIDIA GPU answers nvidia-smi (DEVICE=cpu runs a smoke run)" >&2; exit 1; }
  ORT_FLAVOR=gpu scripts/setup-onnxruntime.sh
  scripts/setup-cuda.sh
  export ORT_DYLIB_PATH=$PWD/.cache/onnxruntime-gpu/libonnxruntime.so.1.31.1
  export LD_LIBRARY_PATH=$PWD/.cache/cuda/lib:$PWD/.cache/onnxruntime-gpu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  CARGO_FLAGS=(--features cuda --target-dir target/cuda)
  BIN=target/cuda/release/newscls
else
  scripts/setup-onnxruntime.sh
  CARGO_FLAGS=()
  BIN=target/release/newscls
fi
command -v wrk >/dev/null && command -v hey >/dev/null \
  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk hey >/dev/null; }

echo "==> machine"
{ date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)'; free -g | head -2
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>/dev/null || echo "no GPU"; } | tee "$OUT/machine.txt"

echo "==> texts: the test split, one article per request and 32 per request"
TEST=$(training/test_split.sh)
python3 - "$TEST" <<'PY'
import json, sys
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
with open("bench/.cache/texts.jsonl", "w") as t, open("bench/.cache/single.jsonl", "w") as s, \
     open("bench/.cache/multi32.jsonl", "w") as m:
    for i, x in enumerate(texts):
        t.write(json.dumps({"text": x}, ensure_ascii=False) + "\n")
        s.write(json.dumps({"inputs": x}, ensure_ascii=False) + "\n")
        m.write(json.dumps({"inputs": [texts[(i + k) % len(texts)] for k in range(32)]}, ensure_ascii=False) + "\n")
json.dump({"inputs": texts[0]}, open("bench/.cache/seed.json", "w"), ensure_ascii=False)
PY

echo "==> build (release)"
cargo build --release --locked --quiet "${CARGO_FLAGS[@]}"

echo "==> ceiling: $DEVICE, in-process, pre-tokenized"
CEILING_OUT=$OUT/ceiling.json cargo bench --quiet --locked "${CARGO_FLAGS[@]}" --bench ceiling -- \
  bench/.cache/texts.jsonl 5 0 "$DEVICE" | tee "$OUT/ceiling.md"

# The service gets all cores but four; the load generators get those four (on 8+ cores).
CORES=$(nproc)
if [ "$CORES" -ge 8 ]; then
  SERVER_CORES="0-$((CORES - 5))"; LOAD_CORES="$((CORES - 4))-$((CORES - 1))"
  SERVE=(taskset -c "$SERVER_CORES"); LOAD=(--load-cores "$LOAD_CORES")
else
  SERVE=(); LOAD=()
fi
echo "==> service ($BIN, device $DEVICE${SERVER_CORES:+, cores $SERVER_CORES})"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"${SERVE[@]}" "$BIN" --device "$DEVICE" --host 127.0.0.1 --port "$PORT" --log-level warn \
  --timeout 30 --max-queue-size 65536 > "$OUT/service.log" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
for _ in $(seq 1 300); do "$BIN" --probe "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
curl -s "http://127.0.0.1:$PORT/info" > "$OUT/info.json" || true
python3 bench/gpu.py --base "http://127.0.0.1:$PORT" --pid "$PID" --out "$OUT" \
  --single bench/.cache/single.jsonl --multi bench/.cache/multi32.jsonl --seed-body bench/.cache/seed.json \
  --ceiling "$OUT/ceiling.json" --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_LOAD" "${LOAD[@]}"
grep -E "VmHWM" /proc/$PID/status | tee -a "$OUT/machine.txt"
echo "==> $OUT/summary.md"
cat "$OUT/summary.md"

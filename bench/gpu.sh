#!/usr/bin/env bash
# make bench-gpu: the GPU benchmark, in one run on one GPU machine.
#   1. the in-process ceiling of the GPU variant (model_fp16.onnx), batch 1-256;
#   2. the service under wrk at c=64/256/1024, with one article per request and with 32;
#   3. the seed scenario (hey, 20 clients x 20 requests);
#   4. the test split through the service (accuracy; agreement with the fp32 export's labels);
# printing texts/s, p50/p99, GPU utilisation (nvidia-smi) and CPU seconds per stage, with ratios
# to the ceiling. Results and the machine's description go to bench/results/gpu-<date>/.
# Each step runs with CUDA graphs off, then on (model.cuda_graphs), side by side in summary.md.
#   DEVICE=cpu runs the same steps on the CPU (a smoke run of the harness; the figures are not
#   GPU figures, and graphs do not apply). SECONDS_PER_LOAD (default 10), CONCURRENCY (default
#   64,256,1024), GRAPHS (default off,on).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-10}
CONCURRENCY=${CONCURRENCY:-64,256,1024}
GRAPHS=${GRAPHS:-off,on}
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

# The service gets all cores but four; the load generators get those four (on 8+ cores).
CORES=$(nproc)
if [ "$CORES" -ge 8 ]; then
  SERVER_CORES="0-$((CORES - 5))"; LOAD_CORES="$((CORES - 4))-$((CORES - 1))"
  SERVE=(taskset -c "$SERVER_CORES"); LOAD=(--load-cores "$LOAD_CORES")
else
  SERVE=(); LOAD=()
fi
GOLDEN=$PWD/tests/golden/news-topic-e5-small.json

# Each setting in turn: the ceiling, then the service under load, then the test split through
# the service (accuracy, and agreement with the fp32 export's labels) after the loads have
# captured their graphs.
for G in ${GRAPHS//,/ }; do
  case "$G" in on) FLAG=true ;; off) FLAG=false ;; *) echo "bench-gpu: GRAPHS takes on,off, not '$G'" >&2; exit 2 ;; esac
  RUN=$OUT/graphs-$G
  mkdir -p "$RUN"
  echo "==> ceiling: $DEVICE, CUDA graphs $G, in-process, pre-tokenized"
  CUDA_GRAPHS=$G CEILING_OUT=$RUN/ceiling.json cargo bench --quiet --locked "${CARGO_FLAGS[@]}" --bench ceiling -- \
    bench/.cache/texts.jsonl 5 0 "$DEVICE" | tee "$RUN/ceiling.md"

  echo "==> service ($BIN, device $DEVICE, CUDA graphs $G${SERVER_CORES:+, cores $SERVER_CORES})"
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  NEWSCLS__MODEL__CUDA_GRAPHS=$FLAG "${SERVE[@]}" "$BIN" --device "$DEVICE" --host 127.0.0.1 --port "$PORT" \
    --log-level warn --timeout 30 --max-queue-size 65536 > "$RUN/service.log" 2>&1 &
  PID=$!
  trap 'kill $PID 2>/dev/null || true' EXIT
  for _ in $(seq 1 300); do "$BIN" --probe "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
  python3 bench/gpu.py --base "http://127.0.0.1:$PORT" --pid "$PID" --out "$RUN" \
    --single bench/.cache/single.jsonl --multi bench/.cache/multi32.jsonl --seed-body bench/.cache/seed.json \
    --ceiling "$RUN/ceiling.json" --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_LOAD" "${LOAD[@]}"
  for B in 32 1; do
    training/eval_service.sh "http://127.0.0.1:$PORT" --batch "$B" --golden "$GOLDEN" | tee "$RUN/eval-batch$B.txt"
  done
  curl -s "http://127.0.0.1:$PORT/info" > "$RUN/info.json" || true
  python3 -c 'import json,sys; m=json.load(open(sys.argv[1]))["model"]; print("cuda_graphs:", json.dumps(m.get("cuda_graphs")))' \
    "$RUN/info.json" | tee -a "$RUN/summary.md"
  grep -E "VmHWM" /proc/$PID/status | tee -a "$RUN/machine.txt"
  kill "$PID"; wait "$PID" 2>/dev/null || true
  trap - EXIT
done

echo "==> side by side"
python3 - "$OUT" ${GRAPHS//,/ } <<'PY' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out, settings = Path(sys.argv[1]), sys.argv[2:]
runs = {g: json.loads((out / f"graphs-{g}" / "results.json").read_text()) for g in settings}
ceilings = {g: json.loads((out / f"graphs-{g}" / "ceiling.json").read_text()) for g in settings}
print("In-process ceiling, texts/s by batch size (ms per batch):\n")
print("| CUDA graphs | " + " | ".join(str(r["batch_size"]) for r in ceilings[settings[0]]["rows"]) + " |")
print("|---|" + "---:|" * len(ceilings[settings[0]]["rows"]))
for g in settings:
    print(f"| {g} | " + " | ".join(f"{r['texts_per_second']:,.0f} ({r['ms_per_batch']:.2f})" for r in ceilings[g]["rows"]) + " |")
print("\nService (texts/s, p50 / p99 ms, GPU busy %):\n")
print("| requests | clients | " + " | ".join(f"graphs {g}" for g in settings) + " |")
print("|---|---:|" + "---|" * len(settings))
for i, r in enumerate(runs[settings[0]]["loads"]):
    cells = []
    for g in settings:
        x = runs[g]["loads"][i]
        busy = "n/a" if x["gpu_busy_mean"] is None else f"{x['gpu_busy_mean']:.0f}"
        cells.append(f"{x['texts_per_s']:,.0f}, {x['p50_ms']:.1f} / {x['p99_ms']:.1f}, {busy}")
    print(f"| {r['kind']} | {r['concurrency']} | " + " | ".join(cells) + " |")
for g in settings:
    s = runs[g]["seed_scenario"]
    print(f"\nSeed scenario, graphs {g}: {s['req_per_s']:,.0f} req/s, mean {s['mean_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms.")
PY

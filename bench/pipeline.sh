#!/usr/bin/env bash
# make bench-pipeline: what the CPU pays per article around the model (HTTP/JSON, tokenization,
# queue and batch assembly, the ONNX Runtime call), with a graph of negligible compute, so it
# runs on any machine and bounds what any GPU can be served at. See bench/pipeline.py.
#   BASELINE=<git revision>  also builds that revision and runs it side by side, alternating.
#   SECONDS_PER_LOAD (default 10), CONCURRENCY (default 64), ROUNDS (default 2).
# Results go to bench/results/pipeline-<date>/ (summary.md, results.json).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-10}
CONCURRENCY=${CONCURRENCY:-64}
ROUNDS=${ROUNDS:-2}
OUT=${OUT:-bench/results/pipeline-$(date +%Y-%m-%d)}
mkdir -p "$OUT" bench/.cache

scripts/setup-onnxruntime.sh
command -v wrk >/dev/null \
  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }

echo "==> machine"
{ date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)'; } | tee "$OUT/machine.txt"

echo "==> texts: the test split's articles, and their openings cut to <= 100 characters (headlines)"
TEST=$(training/test_split.sh)
python3 - "$TEST" <<'PY'
import json, sys
texts = [json.loads(l)["text"] for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
def headline(text):
    cut = text[:100]
    return cut if len(text) <= 100 else cut[: cut.rfind(" ")] if " " in cut else cut
with open("bench/.cache/single.jsonl", "w") as a, open("bench/.cache/headlines.jsonl", "w") as h:
    for x in texts:
        a.write(json.dumps({"inputs": x}, ensure_ascii=False) + "\n")
        h.write(json.dumps({"inputs": headline(x)}, ensure_ascii=False) + "\n")
PY

echo "==> build (release)"
cargo build --release --locked --quiet
BINS=(--bin "this=target/release/newscls")
if [ -n "${BASELINE:-}" ]; then
  echo "==> build the baseline $BASELINE (release)"
  TREE=bench/.cache/baseline
  rm -rf "$TREE" && git worktree prune && git worktree add --detach "$TREE" "$BASELINE" >/dev/null
  (ROOT=$PWD && cd "$TREE" && cargo build --release --locked --quiet --target-dir "$ROOT/target/baseline")
  git worktree remove --force "$TREE"
  BINS+=(--bin "baseline=target/baseline/release/newscls")
  git rev-parse "$BASELINE" > "$OUT/baseline.txt"
fi
git rev-parse HEAD > "$OUT/commit.txt"

# On 8+ cores the service gets all but four, wrk the last four; on fewer they share.
CORES=$(nproc)
PLACE=()
if [ "$CORES" -ge 8 ]; then
  PLACE=(--server-cores "0-$((CORES - 5))" --load-cores "$((CORES - 4))-$((CORES - 1))")
fi
echo "==> pipeline cost (c=$CONCURRENCY, ${SECONDS_PER_LOAD}s per run, $ROUNDS rounds)"
python3 bench/pipeline.py "${BINS[@]}" --articles bench/.cache/single.jsonl \
  --headlines bench/.cache/headlines.jsonl --concurrency "$CONCURRENCY" --seconds "$SECONDS_PER_LOAD" \
  --rounds "$ROUNDS" --out "$OUT" "${PLACE[@]}"
echo "==> $OUT/summary.md"

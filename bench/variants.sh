#!/usr/bin/env bash
# make bench-variants: CPU variants of the model side by side in the service's own ONNX Runtime
# session (the in-process ceiling, benches/ceiling.rs), in alternating rounds on one machine.
# Each variant is a model directory holding the bundled tokenizer and config and one ONNX file
# under the name the service loads on a CPU (model_quantized.onnx), so `model::load` builds the
# session exactly as the service does.
#   VARIANTS  name=source pairs, a source being a file or REV:path in git, with `+rescore` after
#             it to serve it as the service does on a CPU: its close calls re-scored on the
#             bundled model_fp16.onnx (config.json's rescore block; without the suffix the
#             variant runs alone); default: the shipped CPU variant alone, the same re-scored,
#             the one shipped at $PREVIOUS (default: the previous model version, i.e. the commit
#             before the last change of config.json's model_version), and the dynamic int8
#             model.onnx shipped before 3de3705.
#   ROUNDS (default 5), SECONDS_PER_SIZE (default 5), BATCHES (default 1,8), THREADS (default 2).
# Rounds alternate the variants (each round starting with the next one); ratios are taken within
# a round and their median reported. Results go to bench/results/variants-<date>/ (summary.md,
# one ceiling JSON per run, machine.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=models/news-topic-e5-small
PREVIOUS=${PREVIOUS:-$(git log -n 1 --format=%H -G'"model_version"' -- "$MODEL/config.json")^}
VARIANTS=${VARIANTS:-"shipped=$MODEL/model_quantized.onnx rescored=$MODEL/model_quantized.onnx+rescore previous=$PREVIOUS:$MODEL/model_quantized.onnx dynamic=3de3705^:$MODEL/model.onnx"}
ROUNDS=${ROUNDS:-5}
SECONDS_PER_SIZE=${SECONDS_PER_SIZE:-5}
BATCHES=${BATCHES:-1,8}
THREADS=${THREADS:-2}
OUT=${OUT:-bench/results/variants-$(date +%Y-%m-%d)}
WORK=bench/.cache/variants
mkdir -p "$OUT" "$WORK"

scripts/setup-onnxruntime.sh

echo "==> machine"
{ date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)'; git rev-parse HEAD; } | tee "$OUT/machine.txt"

echo "==> variants"
NAMES=()
for pair in $VARIANTS; do
  name=${pair%%=*}
  source=${pair#*=}
  dir="$WORK/$name"
  mkdir -p "$dir" && rm -f "$dir"/*.onnx
  cp "$MODEL/tokenizer.json" "$MODEL/config.json" "$dir/"
  if [ "${source%+rescore}" != "$source" ]; then
    source=${source%+rescore}
    cp "$MODEL/model_fp16.onnx" "$dir/"
  fi
  if [ -f "$source" ]; then
    cp "$source" "$dir/model_quantized.onnx"
  else
    git show "$source" > "$dir/model_quantized.onnx"
  fi
  echo "$name: $source ($(stat -c %s "$dir/model_quantized.onnx") bytes)"
  NAMES+=("$name")
done

echo "==> texts: the test split"
TEST=$(training/test_split.sh)
python3 -c 'import json,sys; [print(json.dumps({"text": json.loads(l)["text"]})) for l in open(sys.argv[1]) if l.strip()]' \
  "$TEST" > "$WORK/texts.jsonl"

echo "==> build the ceiling bench (release)"
cargo bench --no-run --bench ceiling 2>&1 | tail -1
CEILING=$(ls -t target/release/deps/ceiling-* | grep -v '\.d$' | head -1)

# Each round starts with the next variant, so a machine's drift within a round does not always
# favour the same one.
for round in $(seq 1 "$ROUNDS"); do
  n=${#NAMES[@]}
  for i in $(seq 0 $((n - 1))); do
    name=${NAMES[$(( (i + round - 1) % n ))]}
    echo "==> round $round: $name"
    MODEL_DIR="$WORK/$name" CEILING_OUT="$OUT/$name-$round.json" \
      "$CEILING" "$WORK/texts.jsonl" "$SECONDS_PER_SIZE" "$THREADS" cpu "$BATCHES" | grep -E '^\|'
  done
done

python3 - "$OUT" "$ROUNDS" "${NAMES[@]}" <<'PY' | tee "$OUT/summary.md"
import json, statistics, sys
out, rounds, names = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
runs = {n: [json.load(open(f"{out}/{n}-{r}.json")) for r in range(1, rounds + 1)] for n in names}
sizes = [row["batch_size"] for row in runs[names[0]][0]["rows"]]
def tps(n, r, size):
    return next(x["texts_per_second"] for x in runs[n][r]["rows"] if x["batch_size"] == size)
print(f"CPU variants in the service's session: texts/s (median of {rounds} alternating rounds) and the "
      f"median per-round ratio to `{names[0]}` measured in the same round.\n")
print("| variant | " + " | ".join(f"batch {s} texts/s | × {names[0]}" for s in sizes)
      + " | re-scored share | peak RSS MiB |")
print("|---|" + "---:|---:|" * len(sizes) + "---:|---:|")
for n in names:
    cells = []
    for s in sizes:
        cells.append(f"{statistics.median(tps(n, r, s) for r in range(rounds)):.1f}")
        cells.append(f"{statistics.median(tps(n, r, s) / tps(names[0], r, s) for r in range(rounds)):.2f}")
    share = runs[n][0].get("rescored_share")
    cells.append("—" if share is None else f"{statistics.median(runs[n][r]['rescored_share'] for r in range(rounds)):.3f}")
    cells.append(f"{statistics.median(runs[n][r].get('peak_rss_mib') or 0 for r in range(rounds)):.0f}")
    print(f"| {n} | " + " | ".join(cells) + " |")
PY

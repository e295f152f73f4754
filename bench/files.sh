#!/usr/bin/env bash
# make bench-files: `newscls classify` on JSONL, CSV and Parquet against the in-process ceiling,
# in one run on one machine. The texts are the model's test split repeated to ROWS rows (default
# 20,000) with unique ids; the ceiling runs on the same 215 articles, pre-tokenized, at its best
# batch size right before and right after each format, and each format is compared with the mean
# of the two (a shared machine's speed drifts over minutes).
#   ROWS, FORMATS (default jsonl,csv,parquet), CEILING_SECONDS (per measurement, default 10).
# Results go to bench/results/files-<date>/ (summary.md, ceiling.json, machine.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-20000}
FORMATS=${FORMATS:-jsonl,csv,parquet}
CEILING_SECONDS=${CEILING_SECONDS:-10}
OUT=${OUT:-bench/results/files-$(date +%Y-%m-%d)}
WORK=bench/.cache/files
mkdir -p "$OUT" "$WORK"

scripts/setup-onnxruntime.sh
# pyarrow writes the Parquet input (the service has no format converter).
if [ ! -x "$WORK/venv/bin/python" ] || ! "$WORK/venv/bin/python" -c 'import pyarrow' 2>/dev/null; then
  python3 -m venv "$WORK/venv"
  "$WORK/venv/bin/pip" install -q pyarrow==22.0.0
fi

echo "==> machine"
{ date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)'; } | tee "$OUT/machine.txt"

echo "==> texts: the test split repeated to $ROWS rows"
TEST=$(training/test_split.sh)
"$WORK/venv/bin/python" - "$TEST" "$ROWS" "$WORK" <<'PY'
import csv, json, sys
import pyarrow as pa, pyarrow.parquet as pq
rows = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
n, work = int(sys.argv[2]), sys.argv[3]
repeated = [{"id": f"r{i}", "source": rows[i % len(rows)]["source"], "text": rows[i % len(rows)]["text"]}
            for i in range(n)]
with open(f"{work}/texts.jsonl", "w", encoding="utf-8") as t:
    for r in rows:
        t.write(json.dumps({"text": r["text"]}, ensure_ascii=False) + "\n")
with open(f"{work}/in.jsonl", "w", encoding="utf-8") as f:
    for r in repeated:
        f.write(json.dumps(r, ensure_ascii=False) + "\n")
with open(f"{work}/in.csv", "w", encoding="utf-8", newline="") as f:
    w = csv.DictWriter(f, fieldnames=["id", "source", "text"])
    w.writeheader()
    w.writerows(repeated)
pq.write_table(pa.Table.from_pylist(repeated), f"{work}/in.parquet")
PY

echo "==> build (release)"
cargo build --release --locked --quiet
cargo bench --no-run --quiet --locked --bench ceiling

echo "==> ceiling: CPU, in-process, pre-tokenized, every batch size (to find the best)"
CEILING_OUT=$OUT/ceiling.json cargo bench --quiet --locked --bench ceiling -- \
  "$WORK/texts.jsonl" 5 0 cpu | tee "$OUT/ceiling.md"
BEST=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["rows"]; print(max(r, key=lambda x: x["texts_per_second"])["batch_size"])' "$OUT/ceiling.json")

# The ceiling at the best batch size now, in texts/s.
ceiling() {
  CEILING_OUT=$WORK/ceiling-now.json cargo bench --quiet --locked --bench ceiling -- \
    "$WORK/texts.jsonl" "$CEILING_SECONDS" 0 cpu "$BEST" >&2
  python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["best_texts_per_second"], 1))' "$WORK/ceiling-now.json"
}

{
  echo "newscls classify vs the in-process ceiling (batch $BEST, measured right before and right after"
  echo "each format), $ROWS rows of the test split per format, one run; command: \`make bench-files\`"
  echo "(bench/files.sh) at $(git rev-parse --short HEAD)."
  echo
  echo "| format | rows | seconds | rows/s | ceiling before / after, texts/s | × ceiling (mean) | peak RSS MB |"
  echo "|---|---:|---:|---:|---:|---:|---:|"
} > "$OUT/summary.md"
for FORMAT in ${FORMATS//,/ }; do
  BEFORE=$(ceiling)
  echo "==> classify $FORMAT (ceiling before: $BEFORE texts/s)"
  rm -f "$WORK/out.$FORMAT"
  START=$(date +%s.%N)
  /usr/bin/env time -f '%M' -o "$WORK/rss.txt" target/release/newscls classify --device cpu \
    "$WORK/in.$FORMAT" -o "$WORK/out.$FORMAT" \
    || { echo "classify $FORMAT failed" >&2; exit 1; }
  END=$(date +%s.%N)
  AFTER=$(ceiling)
  echo "==> ceiling after: $AFTER texts/s"
  python3 - "$FORMAT" "$ROWS" "$START" "$END" "$BEFORE" "$AFTER" "$(tail -1 "$WORK/rss.txt")" >> "$OUT/summary.md" <<'PY'
import sys
fmt, rows = sys.argv[1], int(sys.argv[2])
start, end, before, after = map(float, sys.argv[3:7])
rss_kb = int(sys.argv[7])
seconds = end - start
rate = rows / seconds
print(f"| {fmt} | {rows:,} | {seconds:.1f} | {rate:.1f} | {before:.1f} / {after:.1f} | "
      f"{rate / ((before + after) / 2):.2f} | {rss_kb // 1024} |")
PY
done
echo "==> $OUT/summary.md"
cat "$OUT/summary.md"

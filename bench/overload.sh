#!/usr/bin/env bash
# Overload and soak runs against a release newscls (not part of the test suite).
#   bench/overload.sh                 offer 10x the measured capacity for 30 s
#   SOAK_MINUTES=30 bench/overload.sh soak at 70% of capacity for 30 minutes, RSS every 10 s
# Reports accepted vs refused, refusal p99, accepted p99 against server.timeout, peak RSS, lost.
set -euo pipefail
cd "$(dirname "$0")/.."
FACTOR=${FACTOR:-10}
SECONDS_LOAD=${SECONDS_LOAD:-30}
SOAK_MINUTES=${SOAK_MINUTES:-0}
scripts/setup-onnxruntime.sh
command -v wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
TEST=$(training/test_split.sh)
mkdir -p bench/.cache bench/results
python3 -c "
import json,sys
for l in open('$TEST', encoding='utf-8'):
    print(json.dumps({'inputs': json.loads(l)['text']}, ensure_ascii=False))" > bench/.cache/overload_bodies.jsonl
cargo build --release --locked --quiet
cargo bench --no-run --quiet --bench loadgen 2>/dev/null
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
./target/release/newscls --host 127.0.0.1 --port "$PORT" --log-level warn > /dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true' EXIT
until ./target/release/newscls --probe "http://127.0.0.1:$PORT/readyz" 2>/dev/null; do sleep 0.1; done
TIMEOUT=$(curl -s "http://127.0.0.1:$PORT/info" | python3 -c 'import json,sys; print(json.load(sys.stdin)["timeout_seconds"])')

echo "==> capacity: wrk, 64 connections, 10 s"
CAP=$(BODIES=bench/.cache/overload_bodies.jsonl wrk -t2 -c64 -d10s --timeout 60s -s bench/mix.lua "http://127.0.0.1:$PORT/predict" \
  | python3 -c 'import json,sys; r=[json.loads(l[9:]) for l in sys.stdin if l.startswith("WRK_JSON ")][0]; print(round(r["ok"]/(r["duration_us"]/1e6),1))')
echo "    capacity ${CAP} req/s"

rss_kib() { awk '/VmRSS/ {print $2}' /proc/$PID/status; }
if [ "$SOAK_MINUTES" -gt 0 ]; then
  RATE=$(python3 -c "print(round($CAP*0.7,1))")
  echo "==> soak: ${RATE} req/s for ${SOAK_MINUTES} min, RSS every 10 s"
  cargo bench --quiet --bench loadgen -- "http://127.0.0.1:$PORT/predict" "$RATE" $((SOAK_MINUTES*60)) bench/.cache/overload_bodies.jsonl \
    > bench/.cache/soak.json &
  LOAD=$!
  : > bench/.cache/soak_rss.txt
  while kill -0 $LOAD 2>/dev/null; do echo "$(date +%s) $(rss_kib)" >> bench/.cache/soak_rss.txt; sleep 10; done
  python3 - <<'PY'
import json
rss = [int(l.split()[1]) for l in open("bench/.cache/soak_rss.txt") if len(l.split()) == 2]
r = json.load(open("bench/.cache/soak.json"))
warm = rss[min(6, len(rss) - 1)]  # after the first minute
print(f"soak: {r['offered']} requests, by status { {k: v['count'] for k, v in r['by_status'].items()} }")
print(f"RSS: start {rss[0]/1024:.1f} MiB, after 1 min {warm/1024:.1f} MiB, end {rss[-1]/1024:.1f} MiB, "
      f"max {max(rss)/1024:.1f} MiB, drift after warm-up {(rss[-1]-warm)/1024:+.1f} MiB")
json.dump({"load": r, "rss_kib": rss}, open("bench/results/soak.json", "w"), indent=1)
PY
  exit 0
fi

RATE=$(python3 -c "print(round($CAP*$FACTOR,1))")
echo "==> overload: ${RATE} req/s offered (${FACTOR}x capacity) for ${SECONDS_LOAD} s"
cargo bench --quiet --bench loadgen -- "http://127.0.0.1:$PORT/predict" "$RATE" "$SECONDS_LOAD" bench/.cache/overload_bodies.jsonl \
  > bench/.cache/overload.json
PEAK=$(awk '/VmHWM/ {print $2}' /proc/$PID/status)
python3 - "$PEAK" "$TIMEOUT" "$CAP" <<'PY'
import json, sys
peak, timeout, cap = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
r = json.load(open("bench/.cache/overload.json"))
s = r["by_status"]
get = lambda k, f: s.get(k, {}).get(f, 0)
accepted, refused = get("200", "count"), get("429", "count") + get("503", "count")
print(f"offered {r['offered']} at {r['offered_rate']:.0f} req/s: accepted (200) {accepted}, refused (429/503) {refused}, "
      f"timeouts (504) {get('504', 'count')}, lost (no HTTP answer) {get('lost', 'count')}, "
      f"other {r['offered'] - accepted - refused - get('504', 'count') - get('lost', 'count')}")
print(f"refusal latency p99 {max(get('429','p99_ms'), get('503','p99_ms')):.1f} ms; "
      f"accepted p50 {get('200','p50_ms'):.0f} ms, p99 {get('200','p99_ms'):.0f} ms, max {get('200','max_ms'):.0f} ms "
      f"(server.timeout {timeout*1000:.0f} ms); peak RSS {peak/1024:.1f} MiB")
json.dump({"capacity_rps": cap, "peak_rss_kib": peak, "timeout_s": timeout, **r}, open("bench/results/overload.json", "w"), indent=1)
PY

#!/usr/bin/env bash
# Stream mode beside /predict and the in-process ceiling, in one run on this machine: the
# ceiling of the CPU variant (benches/ceiling.rs), then a service with stream mode on against a
# local Tansu broker (scripts/setup-tansu.sh): /predict under wrk (one article per request, 20
# clients), a burst of MESSAGES articles through Kafka, the stream at 25/50/75 % of the burst's
# rate (benches/stream.rs), and a second burst with /predict at 4 clients beside it (HTTP goes
# ahead of the stream's backlog: its latency under a backlog). Then scale-out: 1, 2 and 3
# replicas in one consumer group on a six-partition topic, a burst each, with a model of
# negligible compute (bench/pipeline.py's), so what is measured is the stream pipeline and the
# group, not the model on this machine's cores. Writes the tables into $OUT. Not part of `make test`.
#   MESSAGES=2000 SECONDS_PER_LOAD=15 REPLICAS="1 2 3" OUT=bench/results/stream-<date> bench/stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-2000}
REPLICAS=${REPLICAS:-1 2 3}
SECONDS_PER_LOAD=${SECONDS_PER_LOAD:-15}
PORT=${PORT:-8141}
OUT=${OUT:-bench/results/stream-$(date +%F)}
WORK=$(mktemp -d /tmp/newscls-stream-XXXX)
trap 'kill ${NPID:-} ${BPID:-} ${RPIDS:-} 2>/dev/null || true; rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
scripts/setup-tansu.sh
command -v wrk >/dev/null \
  || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk >/dev/null; }
TANSU=.cache/tools/tansu/bin/tansu
TEXTS=$(training/test_split.sh)
cargo build --release --locked --quiet
cargo bench --locked --quiet --no-run --bench ceiling --bench stream 2>/dev/null

echo "== in-process ceiling (model_quantized.onnx, 2 intra-op threads)"
CEILING_OUT="$OUT/ceiling.json" cargo bench --locked --quiet --bench ceiling -- "$TEXTS" "$SECONDS_PER_LOAD" 2 cpu 1,8,32 \
  | tee "$OUT/ceiling.md"

KAFKA_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER=127.0.0.1:$KAFKA_PORT
"$TANSU" broker --listener-url "tcp://$BROKER" --advertised-listener-url "tcp://$BROKER" \
  --storage-engine memory://tansu/ > "$WORK/tansu.log" 2>&1 &
BPID=$!
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null && break; sleep 0.1; done
for topic in news:3 news-classified:1 news-dead-letter:1; do
  "$TANSU" topic create --broker "tcp://$BROKER" --partitions "${topic#*:}" "${topic%:*}" > /dev/null
done
# For Tansu 0.6, not for a real Kafka cluster: one record per produce batch (Tansu cannot fetch
# from the middle of a batch), and a short fetch wait (Tansu answered fetches only after
# fetch.wait.max.ms, 500 ms by default, which then dominated the latency at low load).
cat > "$WORK/config.yaml" <<YAML
stream:
  brokers: "$BROKER"
  kafka:
    batch.num.messages: "1"
    fetch.wait.max.ms: "20"
YAML
./target/release/newscls --config "$WORK/config.yaml" --host 127.0.0.1 --port "$PORT" > "$WORK/newscls.log" 2>&1 &
NPID=$!
for _ in $(seq 1 150); do curl -sf "localhost:$PORT/readyz" >/dev/null && break; sleep 0.2; done
# Resident memory of the service every 0.2 s, for idle / peak / after in the summary.
(while kill -0 $NPID 2>/dev/null; do grep VmRSS "/proc/$NPID/status" | awk '{print $2}'; sleep 0.2; done > "$WORK/rss.txt") &

echo "== /predict, wrk, 20 clients, one article per request"
BODIES=$WORK/bodies.jsonl
python3 - "$TEXTS" "$BODIES" <<'PY'
import json, sys
with open(sys.argv[2], "w") as out:
    for line in open(sys.argv[1], encoding="utf-8"):
        out.write(json.dumps({"inputs": [json.loads(line)["text"]]}, ensure_ascii=False) + "\n")
PY
BODIES=$BODIES wrk -t 2 -c 20 -d "${SECONDS_PER_LOAD}s" --timeout 30s -s bench/mix.lua "http://127.0.0.1:$PORT" \
  | grep WRK_JSON | cut -c10- > "$OUT/predict.json"
cat "$OUT/predict.json"

echo "== stream: a burst of $MESSAGES, then paced"
cargo bench --locked --quiet --bench stream -- "$BROKER" "$TEXTS" "$MESSAGES" | tee "$OUT/stream.md"
RATES=$(python3 -c "
import json, sys
burst = [json.loads(l[12:]) for l in open('$OUT/stream.md') if l.startswith('STREAM_JSON')][0]['messages_per_s']
print(','.join(str(round(burst * f)) for f in (0.25, 0.5, 0.75)))")
cargo bench --locked --quiet --bench stream -- "$BROKER" "$TEXTS" 0 "$RATES" "$SECONDS_PER_LOAD" | tee -a "$OUT/stream.md"

echo "== a second burst with /predict at 4 clients beside it"
(sleep 2; BODIES=$BODIES wrk -t 1 -c 4 -d "${SECONDS_PER_LOAD}s" --timeout 30s -s bench/mix.lua "http://127.0.0.1:$PORT" \
  | grep WRK_JSON | cut -c10- > "$OUT/predict_during_burst.json") &
WPID=$!
cargo bench --locked --quiet --bench stream -- "$BROKER" "$TEXTS" "$MESSAGES" | tee "$OUT/stream_with_http.md"
wait $WPID

python3 - "$OUT" "$WORK/rss.txt" <<'PY' | tee "$OUT/summary.md"
import json, sys
out = sys.argv[1]
rss = [int(l) for l in open(sys.argv[2]) if l.strip().isdigit()]
ceiling = json.load(open(f"{out}/ceiling.json"))
best = ceiling["best_texts_per_second"]
predict = json.load(open(f"{out}/predict.json"))
predict_rate = predict["requests"] / (predict["duration_us"] / 1e6)
phases = [json.loads(l[12:]) for l in open(f"{out}/stream.md") if l.startswith("STREAM_JSON")]
burst = phases[0]
print("| path | texts/s | vs ceiling | p50 ms | p99 ms |")
print("|---|---:|---:|---:|---:|")
print(f"| in-process ceiling (best batch) | {best:.1f} | 1.00 | | |")
print(f"| /predict, wrk c=20, 1 article/request | {predict_rate:.1f} | {predict_rate / best:.2f} | {predict['p50_ms']:.0f} | {predict['p99_ms']:.0f} |")

for p in phases:
    rate = p["messages_per_s"]
    print(f"| stream, {p['phase']} ({p['messages']} messages) | {rate:.1f} | {rate / best:.2f} | {p['p50_ms']} | {p['p99_ms']} |")
mixed = [json.loads(l[12:]) for l in open(f"{out}/stream_with_http.md") if l.startswith("STREAM_JSON")][0]
beside = json.load(open(f"{out}/predict_during_burst.json"))
beside_rate = beside["requests"] / (beside["duration_us"] / 1e6)
print(f"| stream, burst with /predict beside ({mixed['messages']} messages) | {mixed['messages_per_s']:.1f} | {mixed['messages_per_s'] / best:.2f} | {mixed['p50_ms']} | {mixed['p99_ms']} |")
print(f"| /predict, wrk c=4, beside that burst | {beside_rate:.1f} | {beside_rate / best:.2f} | {beside['p50_ms']:.0f} | {beside['p99_ms']:.0f} |")
print(f"\nservice RSS: {rss[0] / 1024:.0f} MiB ready and idle, {max(rss) / 1024:.0f} MiB at most, {rss[-1] / 1024:.0f} MiB at the end")
PY
echo "== scale-out: replicas in one group on a six-partition topic (negligible-compute model)"
kill $NPID 2>/dev/null || true
wait $NPID 2>/dev/null || true
python3 -c "import sys; sys.path.insert(0, 'bench'); from pipeline import write_model_dir; from pathlib import Path; write_model_dir(Path('models/news-topic-e5-small'), Path('$WORK/fast-model'))"
for n in $REPLICAS; do
  "$TANSU" topic create --broker "tcp://$BROKER" --partitions 6 "scale-$n" > /dev/null
  "$TANSU" topic create --broker "tcp://$BROKER" --partitions 1 "scale-$n-out" > /dev/null
  RPIDS=""
  for r in $(seq 1 "$n"); do
    NEWSCLS__STREAM__INPUT_TOPIC=scale-$n NEWSCLS__STREAM__OUTPUT_TOPIC=scale-$n-out \
    NEWSCLS__STREAM__GROUP_ID=scale-$n NEWSCLS__MODEL__INTRA_OP_THREADS=1 NEWSCLS__MODEL__INTRA_OP_SPINNING=false \
      ./target/release/newscls --config "$WORK/config.yaml" --model-dir "$WORK/fast-model" \
      --host 127.0.0.1 --port 0 > "$WORK/replica-$n-$r.log" 2>&1 &
    RPIDS="$RPIDS $!"
  done
  # Until the group has handed out all six partitions.
  for _ in $(seq 1 150); do
    # (no line yet is no match: `|| true`, or pipefail would end the script here)
    owned=$(grep -ho 'partitions assigned partitions=\[[0-9, ]*\]' "$WORK"/replica-"$n"-*.log 2>/dev/null \
      | grep -o '[0-9]\+' | sort -u | wc -l || true)
    [ "$owned" -ge 6 ] && break
    sleep 0.2
  done
  STREAM_INPUT=scale-$n STREAM_OUTPUT=scale-$n-out \
    cargo bench --locked --quiet --bench stream -- "$BROKER" "$TEXTS" "$MESSAGES" \
    | sed "s/| burst |/| burst, $n replica(s) |/" | tee "$OUT/replicas-$n.md"
  kill $RPIDS 2>/dev/null || true
  wait $RPIDS 2>/dev/null || true
  RPIDS=""
done
python3 - "$OUT" $REPLICAS <<'PY' | tee -a "$OUT/summary.md"
import json, sys
out, counts = sys.argv[1], sys.argv[2:]
rows = {n: [json.loads(l[12:]) for l in open(f"{out}/replicas-{n}.md") if l.startswith("STREAM_JSON")][0] for n in counts}
base = rows[counts[0]]["messages_per_s"]
print("\n| replicas (6 partitions, negligible-compute model) | messages/s | vs 1 replica | p50 ms | p99 ms |")
print("|---|---:|---:|---:|---:|")
for n in counts:
    r = rows[n]
    print(f"| {n} | {r['messages_per_s']:.1f} | {r['messages_per_s'] / base:.2f} | {r['p50_ms']} | {r['p99_ms']} |")
PY

echo "stream / predict: $(python3 -c "
import json
p = json.load(open('$OUT/predict.json')); r = p['requests'] / (p['duration_us'] / 1e6)
s = [json.loads(l[12:]) for l in open('$OUT/stream.md') if l.startswith('STREAM_JSON')][0]['messages_per_s']
print(f'{s / r:.2f}')")" | tee -a "$OUT/summary.md"

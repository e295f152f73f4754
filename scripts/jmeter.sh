#!/usr/bin/env bash
# Runs the QA plan (jmeter/newscls.jmx) non-GUI against a running newscls and writes the .jtl
# and the HTML dashboard. Exits non-zero if any sample failed.
# Usage: scripts/jmeter.sh [-Jhost=H] [-Jport=P] [-Jthreads=N] [-Jrampup=S] [-Jloops=N] [-Jtexts=FILE]
#   OUT=dir picks the output folder (default jmeter/results/<timestamp>).
set -euo pipefail
cd "$(dirname "$0")/.."
JMETER=$(scripts/setup-jmeter.sh)
OUT=${OUT:-jmeter/results/$(date +%Y%m%d-%H%M%S)}
rm -rf "$OUT" && mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# The plan finds its CSV relative to its own folder.
(cd jmeter && $JMETER -n -t newscls.jmx -l "$OUT/results.jtl" -j "$OUT/jmeter.log" -e -o "$OUT/report" "$@")
python3 - "$OUT/report/statistics.json" <<'PY'
import json, sys
total = json.load(open(sys.argv[1]))["Total"]
print(f"JMeter: {total['sampleCount']} samples, {total['errorCount']} errors, "
      f"{total['throughput']:.1f} req/s, mean {total['meanResTime']:.0f} ms, "
      f"p90 {total['pct1ResTime']:.0f} ms, p99 {total['pct3ResTime']:.0f} ms")
sys.exit(1 if total["errorCount"] else 0)
PY
echo "report: $OUT/report/index.html"

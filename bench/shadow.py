"""What a shadow challenger costs the champion: newscls alone vs with a challenger mirroring every
text (sample 1.0) and a tenth of them (0.1), in alternating rounds.

This machine's speed drifts by a third within minutes, so the three are measured in turns, round
after round, each round's ratios taken side by side, and the medians reported. All three run
without spinning ONNX Runtime threads (the README's setting for a CPU host with a shadow), so the
ratios isolate the challenger. The challenger is the bundled model again: the same work per text.

Run through `make bench-shadow` (it builds the release binary and fetches wrk first).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from bench.run import CACHE, ROOT, free_port, run_wrk, shadow_counts, wait_for_challenger, wait_ready

MODEL = ROOT / "models/news-topic-e5-small"
CONTENDERS = {
    "alone": [],
    "shadow 1.0": ["--shadow-uri", str(MODEL)],
    "shadow 0.1": ["--shadow-uri", str(MODEL)],
}
SAMPLE = {"shadow 1.0": "1.0", "shadow 0.1": "0.1"}


def measure(name: str, concurrency: int, seconds: int, threads: int, bodies: Path) -> dict:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "NEWSCLS__MODEL__INTRA_OP_THREADS": str(threads),
           "NEWSCLS__MODEL__INTRA_OP_SPINNING": "false", "NEWSCLS__BATCHING__MAX_QUEUE_SIZE": "4096",
           "NEWSCLS__SERVER__TIMEOUT": "60"}
    if name in SAMPLE:
        env["NEWSCLS__SHADOW__SAMPLE"] = SAMPLE[name]
    command = [str(ROOT / "target/release/newscls"), "--host", "127.0.0.1", "--port", str(port),
               "--log-level", "warn", *CONTENDERS[name]]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_ready(base + "/readyz", process)
        if name in SAMPLE:
            wait_for_challenger(base)
        result = run_wrk(base, concurrency, seconds, bodies)
        # What the challenger did while the champion was under load (texts still queued at the
        # end are neither).
        result["shadow"] = shadow_counts(base) if name in SAMPLE else {}
        return result
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 20])
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--bodies", type=Path, default=CACHE / "bodies.jsonl")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    machine = f"{os.cpu_count()} cores, {os.uname().machine}"
    print(f"bench-shadow: {machine}; {args.rounds} rounds x {args.seconds} s per run; "
          f"concurrency {args.concurrency}", flush=True)
    runs: list[dict] = []
    for conc in args.concurrency:
        for round_ in range(args.rounds):
            # Rotate the order, so no contender always runs first in a round.
            names = list(CONTENDERS)
            names = names[round_ % 3:] + names[:round_ % 3]
            for name in names:
                r = measure(name, conc, args.seconds, args.threads, args.bodies)
                r.update(name=name, concurrency=conc, round=round_)
                runs.append(r)
                print(f"    c={conc:<3} round {round_} {name:10} {r['ok_per_second']:6.1f} req/s  "
                      f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms  {r['shadow']}", flush=True)
    (args.out / "runs.json").write_text(json.dumps(runs, indent=2))

    def pick(conc: int, name: str, round_: int) -> dict:
        return next(r for r in runs if (r["concurrency"], r["name"], r["round"]) == (conc, name, round_))

    lines = [f"Machine: {machine}. {args.rounds} rounds of {args.seconds} s per contender and concurrency, "
             f"in turns; ratios per round against `alone` in the same round, medians shown.", "",
             "| concurrency | contender | req/s (median) | p50 ms | p99 ms | throughput × alone | p50 × alone "
             "| p99 × alone | mirrored texts computed / dropped during the load (per run, median) |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    for conc in args.concurrency:
        for name in CONTENDERS:
            mine = [pick(conc, name, k) for k in range(args.rounds)]
            alone = [pick(conc, "alone", k) for k in range(args.rounds)]
            med = lambda key, rs=mine: statistics.median(r[key] for r in rs)  # noqa: E731
            ratio = lambda key: statistics.median(  # noqa: E731
                m[key] / max(a[key], 1e-9) for m, a in zip(mine, alone))
            computed = statistics.median(r["shadow"].get("agree", 0) + r["shadow"].get("disagree", 0) for r in mine)
            dropped = statistics.median(r["shadow"].get("dropped", 0) for r in mine)
            shadow = f"{computed:.0f} / {dropped:.0f}" if name in SAMPLE else ""
            lines.append(f"| {conc} | {name} | {med('ok_per_second'):.1f} | {med('p50_ms'):.0f} | {med('p99_ms'):.0f} "
                         f"| {ratio('ok_per_second'):.2f} | {ratio('p50_ms'):.2f} | {ratio('p99_ms'):.2f} | {shadow} |")
    table = "\n".join(lines)
    (args.out / "summary.md").write_text(table + "\n")
    print("\n" + table)
    print(f"\nwrote {args.out}/summary.md and runs.json")


if __name__ == "__main__":
    sys.exit(main())

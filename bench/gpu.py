"""The GPU benchmark's driver (bench/gpu.sh sets up and calls it): one service, one machine.

For each load: CPU seconds per thread group from /proc (tokenization = the blocking pool,
inference-N = the inference threads, HTTP workers), GPU utilisation sampled by nvidia-smi, wrk's
throughput and latency percentiles. Then the seed scenario with hey (20 clients x 20 requests).
Standard library only. Writes results.json and summary.md into the output folder.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path


# Thread names -> pipeline stage. Unnamed threads carry the process name: ONNX Runtime's pool.
STAGES = {"tokio-rt-worker": "tokenize (blocking pool)", "actix-rt|system": "HTTP workers",
          "inference": "inference thread", "newscls": "ONNX Runtime pool", "model-poll": "registry poll"}


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """utime + stime per pipeline stage (thread name, trailing digits dropped, mapped by STAGES)."""
    tick = os.sysconf("SC_CLK_TCK")
    groups: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        group = re.sub(r"[-_:#]?\d+$", "", name) or name
        group = STAGES.get(group, group)
        groups[group] += (int(fields[11]) + int(fields[12])) / tick
    return dict(groups)


class GpuSampler:
    """nvidia-smi utilisation every 200 ms while running; mean and max busy %."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            self.proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.samples.append(float(line.split(",")[0]))
            except ValueError:
                pass

    def stop(self) -> dict:
        if self.proc:
            self.proc.terminate()
        if not self.samples:
            return {"gpu_busy_mean": None, "gpu_busy_max": None}
        return {"gpu_busy_mean": sum(self.samples) / len(self.samples), "gpu_busy_max": max(self.samples)}


def wrk(base: str, concurrency: int, seconds: int, bodies: Path, cores: str | None) -> dict:
    threads = max(1, min(concurrency, os.cpu_count() // 4 or 1, 8))
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s", "--timeout", "30s",
           "-s", "bench/mix.lua", base]
    if cores:
        cmd = ["taskset", "-c", cores] + cmd
    out = subprocess.run(cmd, env={**os.environ, "BODIES": str(bodies)}, capture_output=True, text=True, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("WRK_JSON "))
    r = json.loads(line[len("WRK_JSON "):])
    r["req_per_s"] = r["requests"] / (r["duration_us"] / 1e6)
    r["errors"] = (r["refused"] + r["timeouts"] + r["other_status"] + r["connect_errors"] + r["read_errors"]
                   + r["write_errors"] + r["socket_timeouts"])
    return r


def hey(base: str, body: Path, cores: str | None) -> dict:
    cmd = ["hey", "-n", "400", "-c", "20", "-m", "POST", "-T", "application/json", "-D", str(body), base + "/predict"]
    if cores:
        cmd = ["taskset", "-c", cores] + cmd
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    grab = lambda pattern: float(re.search(pattern, out).group(1))  # noqa: E731
    return {"req_per_s": grab(r"Requests/sec:\s+([\d.]+)"), "mean_ms": grab(r"Average:\s+([\d.]+) secs") * 1000,
            "p99_ms": grab(r"99%+ in ([\d.]+) secs") * 1000,
            "ok": int(re.search(r"\[200\]\s+(\d+) responses", out).group(1)) if "[200]" in out else 0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--single", type=Path, required=True, help="bodies of one article each (jsonl)")
    ap.add_argument("--multi", type=Path, required=True, help="bodies of 32 articles each (jsonl)")
    ap.add_argument("--seed-body", type=Path, required=True)
    ap.add_argument("--ceiling", type=Path, required=True)
    ap.add_argument("--concurrency", default="64,256,1024")
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--load-cores", default=None, help="taskset cores for wrk/hey")
    args = ap.parse_args()

    ceiling = json.loads(args.ceiling.read_text())["best_texts_per_second"]
    rows = []
    for kind, bodies, texts_per_request in (("1 article", args.single, 1), ("32 articles", args.multi, 32)):
        for c in [int(x) for x in args.concurrency.split(",")]:
            before = thread_cpu_seconds(args.pid)
            gpu = GpuSampler()
            r = wrk(args.base, c, args.seconds, bodies, args.load_cores)
            r.update(gpu.stop())
            after = thread_cpu_seconds(args.pid)
            r["cpu_seconds"] = {k: round(after.get(k, 0) - before.get(k, 0), 2) for k in after
                                if after.get(k, 0) - before.get(k, 0) >= 0.05}
            r.update({"kind": kind, "concurrency": c, "texts_per_s": r["req_per_s"] * texts_per_request})
            r["ratio_to_ceiling"] = r["texts_per_s"] / ceiling
            rows.append(r)
            print(f"  {kind:11} c={c:<5} {r['texts_per_s']:9.0f} texts/s ({r['ratio_to_ceiling']:.2f} x ceiling), "
                  f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, errors {r['errors']}, "
                  f"GPU busy {r['gpu_busy_mean'] if r['gpu_busy_mean'] is None else round(r['gpu_busy_mean'])} %, "
                  f"CPU s {r['cpu_seconds']}", flush=True)
    seed = hey(args.base, args.seed_body, args.load_cores)
    print(f"  seed scenario (hey 20 x 20): {seed['req_per_s']:.0f} req/s, mean {seed['mean_ms']:.1f} ms, "
          f"p99 {seed['p99_ms']:.1f} ms, {seed['ok']} x 200")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"ceiling_best_texts_per_s": ceiling, "loads": rows,
                                                       "seed_scenario": seed}, indent=2))
    lines = [f"In-process ceiling (best batch): {ceiling:,.0f} texts/s.", "",
             "| requests | clients | texts/s | × ceiling | p50 ms | p99 ms | errors | GPU busy % | CPU s per stage |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        busy = "n/a" if r["gpu_busy_mean"] is None else f"{r['gpu_busy_mean']:.0f}"
        stages = ", ".join(f"{k} {v}" for k, v in sorted(r["cpu_seconds"].items(), key=lambda kv: -kv[1])[:4])
        lines.append(f"| {r['kind']} | {r['concurrency']} | {r['texts_per_s']:,.0f} | {r['ratio_to_ceiling']:.2f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} | {busy} | {stages} |")
    lines += ["", f"Seed scenario (hey, 20 clients × 20 requests): {seed['req_per_s']:,.0f} req/s, mean "
              f"{seed['mean_ms']:.1f} ms, p99 {seed['p99_ms']:.1f} ms, {seed['ok']} × 200."]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark newscls against the in-process ceiling and the Python systems it replaces.

Every contender serves the same model, tokenizer and texts with the same thread budget, and is
loaded by the same tool (wrk, closed loop, a rotating mix of real news texts) at the same
concurrencies for the same time, one after another on this machine. Reported per contender and
concurrency: requests/s, latency p50/p90/p99, answers by status, peak RSS, and cold start to
ready. Results: bench/results/*.json, summary.md (the table) and throughput_p99.png.

Run through `make bench` (it builds, fetches the tools and runs the ceiling first).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench/results"
CACHE = ROOT / "bench/.cache"
VENV_BIN = CACHE / "venv/bin"


@dataclass
class Contender:
    name: str
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def contenders(port: int, threads: int, only: list[str]) -> list[Contender]:
    py = str(VENV_BIN / "python")
    thread_env = {"ORT_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    newscls = [str(ROOT / "target/release/newscls"), "--host", "127.0.0.1", "--port", str(port), "--log-level", "warn"]
    newscls_env = {"NEWSCLS__MODEL__INTRA_OP_THREADS": str(threads), "NEWSCLS__BATCHING__MAX_QUEUE_SIZE": "4096",
                   "NEWSCLS__SERVER__TIMEOUT": "60"}
    # The same service with a shadow challenger (the bundled model again: the same work per text)
    # mirroring every text, then a tenth of them, set up as the README recommends on a CPU host
    # (no spinning ONNX Runtime threads, which would leave the challenger no idle CPU).
    shadow = newscls + ["--shadow-uri", str(ROOT / "models/news-topic-e5-small")]
    shadow_env = {**newscls_env, "NEWSCLS__MODEL__INTRA_OP_SPINNING": "false"}
    all_ = [
        Contender("newscls", newscls, newscls_env),
        Contender("newscls-shadow-1.0", shadow, {**shadow_env, "NEWSCLS__SHADOW__SAMPLE": "1.0"}),
        Contender("newscls-shadow-0.1", shadow, {**shadow_env, "NEWSCLS__SHADOW__SAMPLE": "0.1"}),
        Contender("bentoml", [str(VENV_BIN / "bentoml"), "serve", "bench.baselines.bentoml_service:Classifier",
                              "--host", "127.0.0.1", "--port", str(port)],
                  {**thread_env, "BENTOML_DO_NOT_TRACK": "true"}),
        Contender("fastapi", [py, "-m", "uvicorn", "bench.baselines.fastapi_app:app", "--host", "127.0.0.1",
                              "--port", str(port), "--workers", "1", "--log-level", "warning"], thread_env),
        # newscls once more at the end: this machine's speed drifts within minutes, so the
        # shadow runs are compared with the mean of the runs before and after them.
        Contender("newscls-again", newscls, newscls_env),
    ]
    return [c for c in all_ if not only or c.name in only]


def tree_rss_kb(pid: int) -> int:
    """RSS of a process and all its descendants (BentoML and uvicorn fork workers)."""
    total, pending = 0, [pid]
    while pending:
        p = pending.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += int(re.search(r"VmRSS:\s+(\d+)", status).group(1))
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
            pending += [int(c) for c in children]
        except (OSError, AttributeError):
            pass
    return total


def wait_ready(url: str, process: subprocess.Popen, limit: float = 120) -> float:
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        if process.poll() is not None:
            raise SystemExit(f"{url}: server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - started
        except OSError:
            pass
        time.sleep(0.02)
    raise SystemExit(f"{url}: not ready after {limit} s")


def wait_for_challenger(base: str, limit: float = 60) -> None:
    started = time.perf_counter()
    while time.perf_counter() - started < limit:
        with urllib.request.urlopen(f"{base}/info", timeout=5) as r:
            if (json.load(r).get("shadow") or {}).get("challenger"):
                return
        time.sleep(0.1)
    raise SystemExit(f"{base}: the challenger did not load in {limit} s")


def shadow_counts(base: str) -> dict[str, int]:
    """newscls_shadow_texts_total by outcome, now."""
    with urllib.request.urlopen(f"{base}/metrics", timeout=10) as r:
        text = r.read().decode()
    found = re.findall(r'^newscls_shadow_texts_total\{outcome="(\w+)"\} (\S+)$', text, re.M)
    return {outcome: int(float(n)) for outcome, n in found}


def shadow_outcomes(base: str) -> dict[str, int]:
    """newscls_shadow_texts_total by outcome over the whole run, once the challenger has
    finished its queue (the counts stop changing; at most a minute)."""
    last, started = shadow_counts(base), time.perf_counter()
    while time.perf_counter() - started < 60:
        time.sleep(2)
        now = shadow_counts(base)
        if now == last:
            break
        last = now
    return last


def check_answer(base: str, body: str) -> None:
    request = urllib.request.Request(f"{base}/predict", data=body.encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        answer = json.load(r)
    if not answer or not answer[0] or "label" not in answer[0][0]:
        raise SystemExit(f"{base}: unexpected answer {answer!r:.200}")


def run_wrk(base: str, concurrency: int, seconds: int, bodies: Path) -> dict:
    threads = min(2, concurrency)
    cmd = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{seconds}s", "--timeout", "60s",
           "-s", str(ROOT / "bench/mix.lua"), f"{base}/predict"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "BODIES": str(bodies)}, check=True)
    line = next(l for l in out.stdout.splitlines() if l.startswith("WRK_JSON "))
    result = json.loads(line.removeprefix("WRK_JSON "))
    result["requests_per_second"] = result["requests"] / (result["duration_us"] / 1e6)
    result["ok_per_second"] = result["ok"] / (result["duration_us"] / 1e6)
    return result


def run_seed_scenario(base: str, body_file: Path) -> dict:
    """The old QA scenario: 20 threads x 20 loops = 400 requests (hey, one mid-length text)."""
    out = subprocess.run(["hey", "-n", "400", "-c", "20", "-m", "POST", "-T", "application/json", "-D", str(body_file),
                          f"{base}/predict"], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    avg = float(re.search(r"Average:\s+([\d.]+) secs", out).group(1))
    p99 = re.search(r"99%+ in ([\d.]+) secs", out)
    codes = dict(re.findall(r"\[(\d+)\]\s+(\d+) responses", out))
    return {"requests_per_second": rps, "mean_s": avg, "p99_s": float(p99.group(1)) if p99 else None,
            "status": {k: int(v) for k, v in codes.items()}}


def bench_contender(c: Contender, port: int, args, bodies: Path, seed_body: Path) -> dict:
    base = f"http://127.0.0.1:{port}"
    print(f"\n=== {c.name}: starting", flush=True)
    process = subprocess.Popen(c.command, cwd=ROOT, env={**os.environ, **c.env}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        cold = wait_ready(base + c.ready_path, process)
        if "--shadow-uri" in c.command:
            wait_for_challenger(base)
        check_answer(base, bodies.read_text().splitlines()[0])
        idle_rss = tree_rss_kb(process.pid)
        print(f"    ready in {cold:.2f} s, RSS {idle_rss / 1024:.0f} MiB", flush=True)
        runs = []
        for conc in args.concurrency:
            started = time.perf_counter()
            result: dict = {}
            load = threading.Thread(target=lambda: result.update(run_wrk(base, conc, args.seconds, bodies)))
            load.start()
            peak = 0
            while load.is_alive():
                peak = max(peak, tree_rss_kb(process.pid))
                time.sleep(0.5)
            load.join()
            r = result
            r["peak_rss_mib"] = peak / 1024
            r["concurrency"] = conc
            runs.append(r)
            errors = r["refused"] + r["timeouts"] + r["other_status"] + r["connect_errors"] + r["read_errors"] \
                + r["write_errors"] + r["socket_timeouts"]
            print(f"    c={conc:<4} {r['requests_per_second']:8.1f} req/s  p50 {r['p50_ms']:8.1f} ms  "
                  f"p99 {r['p99_ms']:8.1f} ms  errors {errors}  RSS {r['peak_rss_mib']:.0f} MiB "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)
        seed = run_seed_scenario(base, seed_body)
        print(f"    seed scenario (20 x 20): {seed['requests_per_second']:.1f} req/s, mean {seed['mean_s']:.3f} s, "
              f"status {seed['status']}", flush=True)
        result = {"name": c.name, "cold_start_s": cold, "idle_rss_mib": idle_rss / 1024, "runs": runs, "seed": seed}
        if "--shadow-uri" in c.command:
            result["shadow"] = shadow_outcomes(base)
            print(f"    mirrored texts by outcome (whole run): {result['shadow']}", flush=True)
        return result
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def summary_table(results: list[dict], ceiling: dict | None) -> str:
    by = {r["name"]: r for r in results}
    lines = []
    if ceiling:
        lines.append(f"In-process ceiling (ONNX Runtime, pre-tokenized, best batch size): "
                     f"**{ceiling['best_texts_per_second']:.1f} texts/s**.")
        lines.append("")
    head = "| contender | concurrency | req/s | p50 ms | p90 ms | p99 ms | errors | peak RSS MiB |"
    lines += [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for run in r["runs"]:
            errors = sum(run[k] for k in ("refused", "timeouts", "other_status", "connect_errors", "read_errors",
                                          "write_errors", "socket_timeouts"))
            lines.append(f"| {r['name']} | {run['concurrency']} | {run['requests_per_second']:.1f} | {run['p50_ms']:.0f} | "
                         f"{run['p90_ms']:.0f} | {run['p99_ms']:.0f} | {errors} | {run['peak_rss_mib']:.0f} |")
    lines.append("")
    lines.append("| contender | cold start s | idle RSS MiB | seed scenario req/s | seed mean s |")
    lines.append("|---|---:|---:|---:|---:|")
    for r in results:
        lines.append(f"| {r['name']} | {r['cold_start_s']:.2f} | {r['idle_rss_mib']:.0f} | "
                     f"{r['seed']['requests_per_second']:.1f} | {r['seed']['mean_s']:.3f} |")
    lines.append("| old BentoML 0.13 on GPU (reported) | | | 2.4 | 8.2 |")
    if "newscls" in by:
        lines.append("")
        lines.append("Ratios (same run, same machine):")
        n = {run["concurrency"]: run for run in by["newscls"]["runs"]}
        if ceiling:
            for conc, run in sorted(n.items()):
                lines.append(f"- newscls / ceiling at concurrency {conc}: "
                             f"{run['ok_per_second'] / ceiling['best_texts_per_second']:.2f}")
        for other in ("bentoml", "fastapi"):
            if other in by:
                o = {run["concurrency"]: run for run in by[other]["runs"]}
                for conc in sorted(set(n) & set(o)):
                    a, b = n[conc], o[conc]
                    lines.append(f"- newscls / {other} at concurrency {conc}: throughput "
                                 f"{a['ok_per_second'] / max(b['ok_per_second'], 1e-9):.2f}x, p99 "
                                 f"{a['p99_ms'] / max(b['p99_ms'], 1e-9):.2f}x")
                lines.append(f"- RSS newscls / {other}: "
                             f"{max(x['peak_rss_mib'] for x in by['newscls']['runs']) / max(x['peak_rss_mib'] for x in by[other]['runs']):.2f}")
        # Against the mean of newscls before and after (newscls-again), when both ran.
        again = {run["concurrency"]: run for run in by.get("newscls-again", {"runs": []})["runs"]}
        def base(conc: int, key: str) -> float:
            values = [n[conc][key]] + ([again[conc][key]] if conc in again else [])
            return sum(values) / len(values)
        for other in ("newscls-shadow-1.0", "newscls-shadow-0.1"):
            if other in by:
                o = {run["concurrency"]: run for run in by[other]["runs"]}
                for conc in sorted(set(n) & set(o)):
                    a = o[conc]
                    lines.append(f"- {other} / newscls{' (mean of before and after)' if conc in again else ''} "
                                 f"at concurrency {conc}: throughput "
                                 f"{a['ok_per_second'] / max(base(conc, 'ok_per_second'), 1e-9):.2f}x, p50 "
                                 f"{a['p50_ms'] / max(base(conc, 'p50_ms'), 1e-9):.2f}x, p99 "
                                 f"{a['p99_ms'] / max(base(conc, 'p99_ms'), 1e-9):.2f}x")
                lines.append(f"- {other}: mirrored texts by outcome over the run: {by[other].get('shadow')}")
    return "\n".join(lines)


def plot(results: list[dict], ceiling: dict | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r in results:
        xs = [run["concurrency"] for run in r["runs"]]
        a.plot(xs, [run["ok_per_second"] for run in r["runs"]], marker="o", label=r["name"])
        b.plot(xs, [run["p99_ms"] for run in r["runs"]], marker="o", label=r["name"])
    if ceiling:
        a.axhline(ceiling["best_texts_per_second"], color="grey", linestyle="--", label="ceiling (in-process ORT)")
    for ax, title, unit in ((a, "Throughput (200 answers/s)", "req/s"), (b, "p99 latency", "ms")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend()
    b.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 20, 64, 256])
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="ONNX Runtime threads for everyone")
    ap.add_argument("--only", type=lambda s: s.split(","), default=[])
    ap.add_argument("--bodies", type=Path, default=CACHE / "bodies.jsonl")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where the results go")
    args = ap.parse_args()

    args.out.mkdir(parents=True, exist_ok=True)
    seed_body = CACHE / "seed_body.json"
    seed_body.write_text(args.bodies.read_text().splitlines()[0])
    # bench/run.sh measures the ceiling into the same folder, just before.
    ceiling_path = args.out / "ceiling.json"
    ceiling = json.loads(ceiling_path.read_text()) if ceiling_path.exists() else None
    machine = f"{os.cpu_count()} cores, {subprocess.run(['uname', '-m'], capture_output=True, text=True).stdout.strip()}"
    print(f"bench: {machine}; ONNX Runtime threads {args.threads}; {args.seconds} s per step; "
          f"concurrency {args.concurrency}", flush=True)
    results = []
    for c in contenders(free_port(), args.threads, args.only):
        r = bench_contender(c, int(c.command[c.command.index("--port") + 1]), args, args.bodies, seed_body)
        (args.out / f"{c.name}.json").write_text(json.dumps(r, indent=2))
        results.append(r)
    table = summary_table(results, ceiling)
    header = (f"Machine: {machine}. Same model, texts, thread budget ({args.threads} ONNX Runtime threads) and load "
              f"tool (wrk, {args.seconds} s per concurrency) for every contender.\n\n")
    (args.out / "summary.md").write_text(header + table + "\n")
    plot(results, ceiling, args.out / "throughput_p99.png")
    print("\n" + table)
    print(f"\nwrote {args.out}/summary.md and throughput_p99.png")


if __name__ == "__main__":
    sys.exit(main())

"""The pipeline-cost benchmark's driver (bench/pipeline.sh builds and calls it): what the CPU pays
per article around the model, measured on any machine.

The service runs a real model directory whose graph has the real model's inputs and outputs but
negligible compute (written here: a 16-wide embedding of each id, masked, summed over the
sequence, then a MatMul to one logit per label), so everything the CPU does around inference is
what is left: HTTP and JSON, tokenization, the queue and batch assembly, the ONNX Runtime call.
wrk drives it at saturation with real articles, then with headlines. Per-thread CPU from /proc
(thread names map to stages) and the service's own metrics (time inside the ONNX Runtime call)
give CPU milliseconds per article by stage, and articles per CPU-second. Several binaries (e.g.
this commit and a baseline) run side by side in the same run, alternating, so their ratio holds
on a noisy machine. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import thread_cpu_seconds, wrk  # noqa: E402

# Stages as gpu.py names the thread groups, and what each one is here.
TOKENIZE, HTTP, INFERENCE_THREAD, ORT_POOL = ("tokenize (blocking pool)", "HTTP workers", "inference thread",
                                              "ONNX Runtime pool")
EMBEDDING_WIDTH = 16


# --- A minimal ONNX protobuf writer (field numbers from onnx.proto) --------------------------------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int_field(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _node(inputs: list[str], outputs: list[str], op: str, attrs: list[bytes] = ()) -> bytes:
    body = b"".join(_bytes_field(1, i.encode()) for i in inputs)
    body += b"".join(_bytes_field(2, o.encode()) for o in outputs)
    body += _bytes_field(4, op.encode()) + b"".join(_bytes_field(5, a) for a in attrs)
    return _bytes_field(1, body)


def _int_attr(name: str, value: int) -> bytes:
    return _bytes_field(1, name.encode()) + _int_field(3, value) + _int_field(20, 2)


def _float_tensor(name: str, dims: list[int], values: list[float]) -> bytes:
    body = b"".join(_int_field(1, d) for d in dims) + _int_field(2, 1)
    body += _bytes_field(8, name.encode()) + _bytes_field(9, struct.pack(f"<{len(values)}f", *values))
    return _bytes_field(5, body)


def _int64_tensor(name: str, values: list[int]) -> bytes:
    body = _int_field(1, len(values)) + _int_field(2, 7) + _bytes_field(8, name.encode())
    # int64 values go as raw little-endian bytes: negative varints would need ten bytes each.
    body += _bytes_field(9, struct.pack(f"<{len(values)}q", *values))
    return _bytes_field(5, body)


def _value_info(field: int, name: str, elem_type: int, dims: list[str | int]) -> bytes:
    shape = b"".join(_bytes_field(1, _int_field(1, d) if isinstance(d, int) else _bytes_field(2, d.encode()))
                     for d in dims)
    tensor = _int_field(1, elem_type) + _bytes_field(2, shape)
    return _bytes_field(field, _bytes_field(1, name.encode()) + _bytes_field(2, _bytes_field(1, tensor)))


def null_model(vocab: int, labels: int) -> bytes:
    """input_ids, attention_mask [batch, sequence] int64 -> logits [batch, labels] float, in a few
    microseconds per text: Gather(embedding) * mask -> ReduceSum(sequence) -> MatMul."""
    embedding = [((i * 7919 + j * 104729) % 1000) / 1000.0 - 0.5 for i in range(vocab) for j in range(EMBEDDING_WIDTH)]
    head = [((j * 31 + k * 17) % 100) / 100.0 - 0.5 for j in range(EMBEDDING_WIDTH) for k in range(labels)]
    graph = _node(["embedding", "input_ids"], ["e"], "Gather")
    graph += _node(["attention_mask"], ["m"], "Cast", [_int_attr("to", 1)])
    graph += _node(["m", "last"], ["m3"], "Unsqueeze")
    graph += _node(["e", "m3"], ["masked"], "Mul")
    graph += _node(["masked", "sequence_axis"], ["pooled"], "ReduceSum", [_int_attr("keepdims", 0)])
    graph += _node(["pooled", "head"], ["logits"], "MatMul")
    graph += _bytes_field(2, b"pipeline-cost")
    graph += _float_tensor("embedding", [vocab, EMBEDDING_WIDTH], embedding)
    graph += _float_tensor("head", [EMBEDDING_WIDTH, labels], head)
    graph += _int64_tensor("last", [-1])
    graph += _int64_tensor("sequence_axis", [1])
    graph += _value_info(11, "input_ids", 7, ["batch", "sequence"])
    graph += _value_info(11, "attention_mask", 7, ["batch", "sequence"])
    graph += _value_info(12, "logits", 1, ["batch", labels])
    opset = _bytes_field(1, b"") + _int_field(2, 17)
    return _int_field(1, 8) + _bytes_field(8, opset) + _bytes_field(7, graph)


def write_model_dir(source: Path, target: Path) -> None:
    """The real model's tokenizer and config.json beside the negligible graph."""
    target.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "config.json"):
        shutil.copy(source / name, target / name)
    config = json.loads((source / "config.json").read_text())
    tokenizer = json.loads((source / "tokenizer.json").read_text())
    rows = max([len(tokenizer["model"]["vocab"])] + [t["id"] + 1 for t in tokenizer.get("added_tokens", [])])
    (target / "model.onnx").write_bytes(null_model(rows, len(config["id2label"])))


# --- The service under load --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metric_sum(base: str, name: str) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? ([0-9.e+-]+)$", text, re.M))


class Service:
    def __init__(self, binary: str, model_dir: Path, cores: str | None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        # Built-in defaults for every binary, not this checkout's config/default.yaml (a
        # baseline may not know its keys).
        config = model_dir / "pipeline-config.yaml"
        config.write_text("logging:\n  level: warn\n")
        cmd = [binary, "--config", str(config), "--device", "cpu", "--model-dir", str(model_dir), "--host", "127.0.0.1",
               "--port", str(self.port), "--log-level", "warn", "--timeout", "30", "--max-queue-size", "65536"]
        if cores:
            cmd = ["taskset", "-c", cores] + cmd
        # One ONNX Runtime thread that does not spin: the graph costs microseconds, and a spinning
        # pool would be billed to "inference" while it waits.
        env = {**os.environ, "NEWSCLS__MODEL__INTRA_OP_THREADS": "1", "NEWSCLS__MODEL__INTRA_OP_SPINNING": "false"}
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                urllib.request.urlopen(self.base + "/readyz", timeout=2)
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise SystemExit(f"{binary} exited: {self.proc.stderr.read()}")
                time.sleep(0.2)
        raise SystemExit(f"{binary} not ready after 60 s")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)


def measure(service: Service, bodies: Path, concurrency: int, seconds: int, load_cores: str | None) -> dict:
    wrk(service.base, concurrency, 1, bodies, load_cores)  # warm connections and caches
    cpu_before = thread_cpu_seconds(service.proc.pid)
    ort_before = metric_sum(service.base, "newscls_inference_duration_seconds_sum")
    r = wrk(service.base, concurrency, seconds, bodies, load_cores)
    cpu_after = thread_cpu_seconds(service.proc.pid)
    ort_after = metric_sum(service.base, "newscls_inference_duration_seconds_sum")
    cpu = {k: cpu_after.get(k, 0) - cpu_before.get(k, 0) for k in cpu_after}
    articles = r["ok"]
    ort_call = ort_after - ort_before
    stages = {
        "tokenize": cpu.pop(TOKENIZE, 0.0),
        "HTTP/JSON": cpu.pop(HTTP, 0.0),
        # The inference thread assembles batches and calls ONNX Runtime; the call's own time
        # comes from the service's histogram.
        "queue/batch assembly": max(0.0, cpu.pop(INFERENCE_THREAD, 0.0) - ort_call),
        "ORT call": ort_call + cpu.pop(ORT_POOL, 0.0),
    }
    stages["other"] = sum(v for v in cpu.values() if v > 0)
    total = sum(stages.values())
    return {"requests_per_s": r["req_per_s"], "ok": articles, "errors": r["errors"], "p50_ms": r["p50_ms"],
            "p99_ms": r["p99_ms"], "cpu_seconds": total,
            "cpu_ms_per_article": {k: 1000 * v / max(articles, 1) for k, v in stages.items()},
            "articles_per_cpu_second": articles / total if total else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bin", action="append", required=True, help="NAME=PATH of a newscls binary (repeatable)")
    ap.add_argument("--model", type=Path, default=Path("models/news-topic-e5-small"))
    ap.add_argument("--articles", type=Path, required=True, help="bodies of one article each (jsonl)")
    ap.add_argument("--headlines", type=Path, required=True, help="bodies of one headline each (jsonl)")
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="alternations of the binaries")
    ap.add_argument("--server-cores", default=None)
    ap.add_argument("--load-cores", default=None)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("bench/.cache/pipeline-model"),
                    help="where the negligible-compute model directory is written")
    args = ap.parse_args()

    model_dir = args.work
    write_model_dir(args.model, model_dir)
    binaries = dict(b.split("=", 1) for b in args.bin)
    runs: dict[tuple[str, str], list[dict]] = {}
    for round_ in range(args.rounds):
        for name, path in binaries.items():
            service = Service(path, model_dir, args.server_cores)
            try:
                for kind, bodies in (("articles", args.articles), ("headlines", args.headlines)):
                    r = measure(service, bodies, args.concurrency, args.seconds, args.load_cores)
                    runs.setdefault((name, kind), []).append(r)
                    per = r["cpu_ms_per_article"]
                    print(f"  round {round_ + 1} {name:10} {kind:9} {r['requests_per_s']:8.0f} req/s, "
                          f"{r['articles_per_cpu_second']:6.0f} per CPU-s, p99 {r['p99_ms']:.1f} ms, "
                          f"errors {r['errors']}, CPU ms/article "
                          + ", ".join(f"{k} {v:.3f}" for k, v in per.items()), flush=True)
            finally:
                service.stop()

    # The best round of each (least disturbed by the machine's other work).
    best = {key: max(rs, key=lambda r: r["articles_per_cpu_second"]) for key, rs in runs.items()}
    stage_names = list(next(iter(best.values()))["cpu_ms_per_article"])
    lines = [f"Pipeline cost on {os.cpu_count()} cores: the negligible-compute graph, wrk c={args.concurrency}, "
             f"{args.seconds} s per run, best of {args.rounds} alternating rounds. CPU ms per article by stage "
             "(per-thread CPU from /proc; the ONNX Runtime call from the service's histogram).", "",
             "Command: `" + " ".join(["python3"] + sys.argv) + "`", "",
             "| binary | texts | req/s | articles per CPU-s | p50 ms | p99 ms | "
             + " | ".join(stage_names) + " | total CPU ms |",
             "|---|---|---:|---:|---:|---:|" + "---:|" * (len(stage_names) + 1)]
    for (name, kind), r in best.items():
        per = r["cpu_ms_per_article"]
        lines.append(f"| {name} | {kind} | {r['requests_per_s']:,.0f} | {r['articles_per_cpu_second']:,.0f} | "
                     f"{r['p50_ms']:.1f} | {r['p99_ms']:.1f} | " + " | ".join(f"{per[s]:.3f}" for s in stage_names)
                     + f" | {sum(per.values()):.3f} |")
    names = list(binaries)
    if len(names) > 1:
        lines.append("")
        for kind in ("articles", "headlines"):
            base = best[(names[-1], kind)]["articles_per_cpu_second"]
            for name in names[:-1]:
                ratio = best[(name, kind)]["articles_per_cpu_second"] / base if base else 0.0
                lines.append(f"- {kind}: {name} serves {ratio:.2f} × the articles per CPU-second of {names[-1]}.")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(
        {f"{n}/{k}": rs for (n, k), rs in runs.items()}, indent=2))
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())

"""The same model through three protocols, one article per request, side by side in one run:
KServe v2 over HTTP with JSON tensors, over HTTP with Triton's binary tensor extension (the
client's default), and over gRPC. The clients are tritonclient's own (HTTP and gRPC), each in
CONCURRENCY threads calling in a closed loop for SECONDS. Prints a Markdown table.

Usage: python bench/protocols.py HTTP_ADDRESS GRPC_ADDRESS MODEL TEXTS.jsonl SECONDS CONCURRENCY
"""

import json
import sys
import threading
import time

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http

http_address, grpc_address, model, texts_path, seconds, concurrency = sys.argv[1:7]
seconds, concurrency = float(seconds), int(concurrency)
texts = [json.loads(line)["text"] for line in open(texts_path, encoding="utf-8")]


def http_call(binary):
    client = triton_http.InferenceServerClient(url=http_address)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities")]

    def call(text):
        tensor = triton_http.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text], dtype=object), binary_data=binary)
        client.infer(model, [tensor], outputs=outputs).as_numpy("label")

    return call


def grpc_call():
    client = triton_grpc.InferenceServerClient(url=grpc_address)

    def call(text):
        tensor = triton_grpc.InferInput("text", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([text], dtype=object))
        client.infer(model, [tensor]).as_numpy("label")

    return call


def run(make_call):
    latencies, errors = [], [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(index):
        call = make_call()
        i = index
        while time.monotonic() < stop:
            started = time.monotonic()
            try:
                call(texts[i % len(texts)])
                with lock:
                    latencies.append(time.monotonic() - started)
            except Exception:  # counted, not raised: the run goes on
                with lock:
                    errors[0] += 1
            i += concurrency

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
    begun = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - begun
    latencies.sort()
    pct = lambda p: latencies[int((len(latencies) - 1) * p)] * 1000 if latencies else 0.0
    return len(latencies) / elapsed, pct(0.5), pct(0.99), errors[0]


print(f"| protocol | requests/s | p50 ms | p99 ms | errors |  ({concurrency} clients, {seconds:.0f} s each, one article per request)")
print("|---|---:|---:|---:|---:|")
for name, make in [
    ("HTTP, JSON tensors", lambda: http_call(False)),
    ("HTTP, binary tensors (tritonclient default)", lambda: http_call(True)),
    ("gRPC (tritonclient.grpc default)", grpc_call),
]:
    rps, p50, p99, errors = run(make)
    print(f"| {name} | {rps:.1f} | {p50:.1f} | {p99:.1f} | {errors} |", flush=True)

"""tritonclient.grpc, unchanged and with its defaults, against newscls's gRPC port; prints what it
got as one JSON object.

Usage: python grpc_clients.py GRPC_ADDRESS HTTP_BASE MODEL_NAME SERVER_PID MODE, texts as a JSON
list on stdin. MODE "infer": health, metadata, inference, an unknown model, a deadline shorter
than the work. MODE "overload": many concurrent calls at a server with a tiny queue. MODE
"sigterm": calls in flight when the server gets SIGTERM. The Rust test asserts on the output.
"""

import json
import os
import re
import signal
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

address, http_base, model, pid, mode = sys.argv[1:6]
texts = json.loads(sys.stdin.read())
out = {}


def tensor(items):
    t = triton.InferInput("text", [len(items)], "BYTES")
    t.set_data_from_numpy(np.array(items, dtype=object))
    return t


def infer(client, items, **kwargs):
    try:
        result = client.infer(model, [tensor(items)], **kwargs)
        return {"status": "OK",
                "labels": [x.decode() for x in result.as_numpy("label").tolist()],
                "probabilities": result.as_numpy("probabilities").tolist()}
    except InferenceServerException as e:
        return {"status": e.status(), "message": e.message()}


def queue_depth():
    metrics = urllib.request.urlopen(http_base + "/metrics").read().decode()
    match = re.search(r'^newscls_queue_depth\{role="champion"\} (\S+)$', metrics, re.M)
    return float(match.group(1)) if match else 0.0


client = triton.InferenceServerClient(url=address)
if mode == "infer":
    out["live"] = client.is_server_live()
    out["ready"] = client.is_server_ready()
    out["model_ready"] = client.is_model_ready(model)
    out["server_metadata"] = client.get_server_metadata(as_json=True)
    out["model_metadata"] = client.get_model_metadata(model, as_json=True)
    out["infer"] = infer(client, texts)
    try:
        client.infer("no-such-model", [tensor(texts)])
        out["unknown_model"] = "accepted"
    except InferenceServerException as e:
        out["unknown_model"] = e.status()
    out["deadline"] = infer(client, texts * 10, client_timeout=0.002)
elif mode == "overload":
    with ThreadPoolExecutor(max_workers=32) as pool:
        results = list(pool.map(lambda _: infer(client, texts), range(96)))
    out["statuses"] = [r["status"] for r in results]
elif mode == "sigterm":
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [pool.submit(infer, triton.InferenceServerClient(url=address), texts) for _ in range(8)]
        time.sleep(1.0)
        out["queued_at_sigterm"] = queue_depth()
        os.kill(int(pid), signal.SIGTERM)
        out["statuses"] = [f.result()["status"] for f in futures]
print(json.dumps(out))

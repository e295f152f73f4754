"""Baseline: BentoML 1.4 with adaptive batching, serving the same ONNX model and tokenizer.

BENTOML_DO_NOT_TRACK=true bentoml serve bench.baselines.bentoml_service:Classifier --port 8002
Clients POST /predict with {"inputs": ["text", ...]}; BentoML merges concurrent requests'
lists into batches (max_batch_size texts, waiting at most max_latency_ms).
"""

import os

import bentoml

from bench.baselines.model import Model

MAX_BATCH = int(os.environ.get("BENTO_MAX_BATCH_SIZE", "32"))
# Generous, so BentoML's own latency budget does not refuse requests under load (a fair run).
MAX_LATENCY_MS = int(os.environ.get("BENTO_MAX_LATENCY_MS", "60000"))


@bentoml.service(workers=1, traffic={"timeout": 120})
class Classifier:
    def __init__(self) -> None:
        self.model = Model()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, inputs: list[str]) -> list[list[dict]]:
        return self.model.predict(inputs)

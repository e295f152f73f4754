"""The same model, tokenizer and postprocessing as newscls, in Python (for the baselines).

Tokenize with the model directory's tokenizer.json (truncation as saved), pad to the longest
text in the batch, run onnxruntime, softmax, rank labels: exactly newscls's pipeline, so the
comparison is about serving, not about the model.
"""

import json
import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

MODEL_DIR = Path(os.environ.get("MODEL_DIR", Path(__file__).resolve().parents[2] / "models/news-topic-e5-small"))
THREADS = int(os.environ.get("ORT_THREADS", "0"))


class Model:
    def __init__(self, model_dir: Path = MODEL_DIR, threads: int = THREADS):
        config = json.loads((model_dir / "config.json").read_text())
        self.labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.no_padding()
        self.pad_id = self.tokenizer.token_to_id("<pad>") or 0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # The file newscls runs on a CPU (its first choice there; model.onnx in older directories).
        onnx_file = next(model_dir / f for f in ("model_quantized.onnx", "model.onnx") if (model_dir / f).exists())
        self.session = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def predict(self, texts: list[str]) -> list[list[dict]]:
        ids = [e.ids for e in self.tokenizer.encode_batch(texts)]
        width = max(len(i) for i in ids)
        input_ids = np.full((len(ids), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(ids), width), dtype=np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        feed = {"input_ids": input_ids, "attention_mask": mask}
        logits = self.session.run(["logits"], {k: v for k, v in feed.items() if k in self.inputs})[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = exp / exp.sum(axis=1, keepdims=True)
        return [
            [{"label": self.labels[i], "score": float(row[i])} for i in np.argsort(-row)]
            for row in probs
        ]

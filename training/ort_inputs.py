"""What the export and the golden-file tools share: ONNX Runtime sessions, padded model inputs,
and the family of float kernels this machine gets. No torch here, so a tool that only runs the
exported model needs onnxruntime, numpy and tokenizers alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Several sessions live side by side here: a session's threads spinning after its run would
    # take the cores from the next one's timing.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def batch_inputs(tokenizer: Tokenizer, texts: list[str], pad_id: int) -> dict[str, np.ndarray]:
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(len(i) for i in ids)
    input_ids = np.full((len(ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), width), dtype=np.int64)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def cpu_flags() -> list[str]:
    try:
        return next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return []


def float_kernel_family() -> str:
    """Which family of ONNX Runtime's float kernels this machine gets, as the service names it
    (`device::FloatKernels`): a quantized model's logits are bit-identical only within one."""
    flags = cpu_flags()
    if "avx512f" in flags:
        return "avx512f"
    if "avx2" in flags and "fma" in flags:
        return "fma3"
    return "sse" if flags else "other"

"""The integer products of a quantized ONNX model, as ONNX Runtime's CPU kernels compute them, vs exact.

ONNX Runtime picks its integer matrix kernels by instruction set: with AVX2 or AVX-512 without
VNNI it adds each pair of neighbouring uint8 x int8 products into a saturating int16
(vpmaddubsw) before widening; with AVX-512 VNNI, AVX-VNNI or plain SSE4.1 the sums are exact. A
model computes the same numbers on every x86 CPU only if no pair ever saturates.

For every integer MatMul of the model (MatMulIntegerToFloat, MatMulInteger) this builds a
MatMulInteger graph with the model's own weights and activations chosen to push the pairs to
their extremes (all 255; 255 where one output column's weight is positive and 0 elsewhere, and
the reverse; random bytes), runs it through onnxruntime on this CPU, and compares it with
numpy's exact product. Prints one JSON object: how many MatMuls were probed and which were not
exact. tests/tools/kernel_paths.rs runs it natively and under qemu-x86_64 as other CPUs.

Usage: python kernel_paths.py MODEL.onnx
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

INTEGER_MATMULS = ("MatMulIntegerToFloat", "MatMulInteger")


def probe_rows(weights: np.ndarray) -> np.ndarray:
    """uint8 activations [rows, K] that drive the pairwise sums of `weights` [K, N] to extremes."""
    k, n = weights.shape
    rng = np.random.default_rng(7)
    # The columns whose positive (or negative) weights add up the most.
    positive = np.clip(weights.astype(np.int32), 0, None).sum(0).argmax()
    negative = np.clip(weights.astype(np.int32), None, 0).sum(0).argmin()
    rows = [np.full(k, 255), np.where(weights[:, positive] > 0, 255, 0), np.where(weights[:, negative] < 0, 255, 0),
            rng.integers(0, 256, k), rng.integers(200, 256, k)]
    return np.stack(rows).astype(np.uint8)


def product(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """activations x weights through onnxruntime's MatMulInteger on this CPU, one thread."""
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "probe",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, list(activations.shape))],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [activations.shape[0], weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"a": activations})[0]


def main() -> None:
    model = onnx.load(sys.argv[1])
    initializers = {i.name: i for i in model.graph.initializer}
    probed, inexact = 0, []
    for node in model.graph.node:
        if node.op_type not in INTEGER_MATMULS or node.input[1] not in initializers:
            continue
        weights = numpy_helper.to_array(initializers[node.input[1]])
        activations = probe_rows(weights)
        got = product(weights, activations).astype(np.int64)
        exact = activations.astype(np.int64) @ weights.astype(np.int64)
        probed += 1
        if not np.array_equal(got, exact):
            inexact.append({"node": node.name, "weights": str(weights.dtype),
                            "max_abs_diff": int(np.abs(got - exact).max())})
    print(json.dumps({"probed": probed, "inexact": inexact}))


if __name__ == "__main__":
    main()

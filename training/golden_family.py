"""Adds this machine's float-kernel family to the golden file: the shipped CPU variant's logits
for the golden texts, as ONNX Runtime computes them here.

The CPU variant's integer sums are exact on every x86 CPU, but ONNX Runtime picks its float
kernels (matrix products, exp, quantize) by instruction set too: SSE, FMA3 (AVX2) and AVX-512F
hosts each round the last bits their own way, and the quantized graph can re-round such a bit into
a step of one quantum. So the logits are bit-identical within a family and a few hundredths to
tenths apart between families. `export.py` writes the family of the machine it ran on; this adds
another family's logits when run on such a host, so the parity test (tests/it/parity.rs) holds
hosts of every recorded family to 1e-5 instead of the cross-family tolerance.

    python training/golden_family.py [--golden tests/golden/news-topic-e5-small.json]
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ort_inputs import batch_inputs, float_kernel_family, ort_session  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", type=Path, default=ROOT / "tests/golden/news-topic-e5-small.json")
    args = parser.parse_args()
    golden = json.loads(args.golden.read_text())
    model_dir = ROOT / "models" / golden["model_dir"]
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    pad_id = tokenizer.token_to_id("<pad>")
    session = ort_session(model_dir / "model_quantized.onnx", 1)
    texts = [case["text"] for case in golden["cases"]]
    singles = [session.run(["logits"], batch_inputs(tokenizer, [t], pad_id))[0][0] for t in texts]
    batch = session.run(["logits"], batch_inputs(tokenizer, golden["padded_batch"]["texts"], pad_id))[0]
    family = float_kernel_family()
    worst = max(float(np.abs(np.array(s) - np.array(c["logits"])).max())
                for s, c in zip(singles, golden["cases"]))
    if family == golden["float_kernels"]:
        print(f"{family} is the golden file's own family; its logits here differ by {worst:.2e}")
        return 0 if worst <= 1e-5 else 1
    others = golden.setdefault("other_float_kernels", {})
    others[family] = {
        "onnxruntime": ort.__version__,
        "cases": [[float(x) for x in row] for row in singles],
        "padded_batch": [[float(x) for x in row] for row in batch],
    }
    flips = sum(int(np.argmax(s)) != golden["labels"].index(c["label"]) for s, c in zip(singles, golden["cases"]))
    args.golden.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n")
    print(f"added {family}: max |logit diff| to {golden['float_kernels']} {worst:.3f}, "
          f"top labels changed {flips} of {len(singles)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

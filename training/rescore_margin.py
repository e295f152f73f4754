"""Chooses the re-scoring margin of a model directory from data, and records what it gives.

The CPU variant (`model_quantized.onnx`) gives the full-precision model's top label on all but a
few articles, and those are close calls: their top two logits are close. The service runs a text
whose quantized top-two margin is below `rescore.below_margin` (config.json) again on a precise
variant (`rescore.file`) and answers from there. The margin chosen here is the largest quantized
margin at which the top label differed from the reference's, on the validation split and the
unlabelled articles (the test split is left out of the choice), times a safety factor.

The reference is the fp32 export when given (`--fp32`, as `make model` does), else the precise
file itself run on the CPU (ONNX Runtime computes an fp16 graph there in float; the export
measured it at fp32's top label on every article of both sets).

Writes: config.json's `rescore` block; the golden file's `rescore` block (every article where the
quantized label differs from the reference's, with the reference's label, which a test replays
through the service); and the model card's section between its markers. Each text is run alone,
as the service runs a re-scored text; `--cache` keeps the logits between runs.

    python rescore_margin.py --model ../models/news-topic-e5-small --data .cache/data \\
        --golden ../tests/golden/news-topic-e5-small.json [--fp32 .cache/model_fp32.onnx]
"""
from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from ort_inputs import batch_inputs, float_kernel_family, ort_session

FAST = "model_quantized.onnx"
PRECISE = "model_fp16.onnx"
SAFETY_FACTOR = 1.1
CARD_START = "<!-- rescore:start -->"
CARD_END = "<!-- rescore:end -->"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def logits_alone(model: Path, tokenizer: Tokenizer, texts: list[str], pad_id: int,
                 cache: Path | None, name: str) -> np.ndarray:
    """Each text's logits, run alone (one row, its own length), cached by file and set."""
    cached = cache / f"{name}.npz" if cache else None
    if cached and cached.exists():
        stored = np.load(cached)
        if stored["logits"].shape[0] == len(texts):
            return stored["logits"]
    session = ort_session(model, threads=os.cpu_count() or 1)
    rows = [session.run(["logits"], batch_inputs(tokenizer, [t], pad_id))[0][0] for t in texts]
    logits = np.stack(rows).astype(np.float32)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cached, logits=logits)
    return logits


def top_two_margin(logits: np.ndarray) -> np.ndarray:
    top2 = np.sort(logits, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--golden", type=Path, required=True)
    parser.add_argument("--fp32", type=Path, help="the fp32 export, the reference (else the precise file)")
    parser.add_argument("--cache", type=Path, help="keep the logits here between runs")
    args = parser.parse_args()

    config_path = args.model / "config.json"
    config = json.loads(config_path.read_text())
    labels = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    tokenizer = Tokenizer.from_file(str(args.model / "tokenizer.json"))
    pad_id = tokenizer.token_to_id("<pad>")
    reference_path = args.fp32 or args.model / PRECISE
    reference_name = "fp32 export" if args.fp32 else f"{PRECISE} on the CPU"
    version = config.get("model_version", "unversioned")

    sets = {name: read_jsonl(args.data / f"{name}.jsonl") for name in ("val", "unlabelled", "test")}
    run = {}
    for name, rows in sets.items():
        texts = [r["text"] for r in rows]
        key = f"{version}-{name}"
        fast = logits_alone(args.model / FAST, tokenizer, texts, pad_id, args.cache, f"{key}-fast")
        precise = logits_alone(args.model / PRECISE, tokenizer, texts, pad_id, args.cache, f"{key}-precise")
        reference = (logits_alone(reference_path, tokenizer, texts, pad_id, args.cache, f"{key}-fp32")
                     if args.fp32 else precise)
        run[name] = (fast, precise, reference)

    # The margin: the largest quantized margin among the articles whose quantized label differs
    # from the reference's, on the sets the choice may see, times the safety factor.
    flip_margins = []
    for name in ("val", "unlabelled"):
        fast, _, reference = run[name]
        flipped = fast.argmax(1) != reference.argmax(1)
        flip_margins.extend(top_two_margin(fast)[flipped].tolist())
    largest = max(flip_margins, default=0.0)
    below_margin = math.ceil(largest * SAFETY_FACTOR * 1000) / 1000

    figures = {}
    for name, (fast, precise, reference) in run.items():
        margins = top_two_margin(fast)
        rescored = margins < below_margin
        answered = np.where(rescored[:, None], precise, fast)
        want = reference.argmax(1)
        gold = [labels.index(r["label"]) if r.get("label") in labels else -1 for r in sets[name]]
        accuracy = lambda logits: float((logits.argmax(1) == np.array(gold)).mean())  # noqa: E731
        figures[name] = {
            "articles": len(want),
            "accuracy": {"quantized_alone": accuracy(fast), "rescored": accuracy(answered),
                         "precise_alone": accuracy(precise)},
            "quantized_alone": float((fast.argmax(1) == want).mean()),
            "rescored": float((answered.argmax(1) == want).mean()),
            "precise_alone": float((precise.argmax(1) == want).mean()),
            "rescored_share": float(rescored.mean()),
        }

    config["rescore"] = {"below_margin": below_margin, "file": PRECISE}
    config_path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")

    golden = json.loads(args.golden.read_text())
    flips = []
    for name in ("val", "unlabelled", "test"):
        fast, _, reference = run[name]
        margins = top_two_margin(fast)
        for i in np.nonzero(fast.argmax(1) != reference.argmax(1))[0]:
            flips.append({
                "set": name,
                "text": sets[name][i]["text"],
                "label": labels[int(reference[i].argmax())],
                "quantized_label": labels[int(fast[i].argmax())],
                "quantized_margin": round(float(margins[i]), 4),
            })
    golden["rescore"] = {
        "below_margin": below_margin,
        "file": PRECISE,
        "reference": reference_name,
        "float_kernels": float_kernel_family(),
        "articles": {name: len(rows) for name, rows in sets.items()},
        "flips": flips,
    }
    args.golden.write_text(json.dumps(golden, indent=1, ensure_ascii=False) + "\n")

    card_path = args.model / "MODEL_CARD.md"
    card = card_path.read_text()
    section = card_section(below_margin, largest, reference_name, figures, len(flip_margins))
    if CARD_START in card:
        before, rest = card.split(CARD_START, 1)
        card = before + section + rest.split(CARD_END, 1)[1]
    else:
        anchor = "## Data"
        card = card.replace(anchor, section + "\n\n" + anchor, 1) if anchor in card else card + "\n" + section + "\n"
    card_path.write_text(card)
    print(json.dumps({"below_margin": below_margin, "largest_flip_margin": largest, "figures": figures}, indent=1))


def card_section(below_margin: float, largest: float, reference: str, figures: dict, flips: int) -> str:
    rows = []
    for path, key, share in (("quantized alone", "quantized_alone", None),
                             (f"quantized, close calls re-scored on {PRECISE}", "rescored", "rescored_share"),
                             (f"{PRECISE} alone", "precise_alone", None)):
        test, unlabelled = figures["test"], figures["unlabelled"]
        shares = f"{test[share]:.3f} / {unlabelled[share]:.3f}" if share else "—"
        rows.append(f"| {path} | {test[key]:.3f} | {unlabelled[key]:.4f} | {shares} "
                    f"| {test['accuracy'][key]:.3f} |")
    return "\n".join([
        CARD_START,
        "## Re-scoring close calls on the CPU",
        "",
        f"The CPU path answers from `{FAST}`, except texts whose top-two logit margin there is below "
        f"**{below_margin}** (`rescore.below_margin` in config.json): those run again, alone, on "
        f"`{PRECISE}` and are answered from there (`model.rescore`). The margin is the largest quantized "
        f"margin at which the top label differed from the reference ({reference}) on the validation "
        f"split and the unlabelled articles ({flips} such articles, largest margin {largest:.3f}), "
        f"times {SAFETY_FACTOR}; the test split was left out of the choice. Agreement is with the "
        "reference's top label, accuracy with the test split's true labels (the re-scored path's is "
        "what `newscls eval` measures of a CPU deployment); written by `training/rescore_margin.py`.",
        "",
        f"| variant path | agreement, test split ({figures['test']['articles']}) "
        f"| agreement, unlabelled ({figures['unlabelled']['articles']}) | share re-scored, test / unlabelled "
        "| accuracy, test split |",
        "|---|---:|---:|---:|---:|",
        *rows,
        CARD_END,
    ])


if __name__ == "__main__":
    main()

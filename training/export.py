"""Export the fine-tuned classifier to ONNX, quantize it, verify it, and write the model directory.

Steps: export fp32 (opset 17, dynamic batch and sequence axes, eager attention) -> check parity
with PyTorch on padded batches -> int8 dynamic quantization with per-channel weights -> evaluate
fp32 and int8 on the test split in onnxruntime -> keep int8 when it is within one accuracy point
-> measure latency -> write model.onnx, tokenizer.json, config.json, MODEL_CARD.md and the golden
file that the service's parity test replays.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from sklearn.metrics import confusion_matrix, f1_score
from tokenizers import Tokenizer

from classifier import MeanPoolClassifier
from finetune import load_split

# Korean investment-news sentences for the golden file: the service must reproduce these logits.
KOREAN_SAMPLES = [
    "삼성전자 주가가 3분기 실적 발표 이후 5% 급등하며 코스피 상승을 이끌었다.",
    "한국은행 금융통화위원회는 기준금리를 연 3.5%로 동결했다.",
    "국회 본회의에서 내년도 예산안이 여야 합의로 통과됐다.",
    "손흥민이 멀티골을 터뜨리며 토트넘의 3-1 승리를 이끌었다.",
    "미국과 중국 정상이 무역 분쟁 해소를 위한 회담을 가졌다.",
    "보건복지부는 독감 유행 주의보를 발령하고 예방접종을 당부했다.",
    "인기 아이돌 그룹의 새 앨범이 발매 첫 주 100만 장을 돌파했다.",
    "원달러 환율이 1,400원을 넘어서며 외국인 투자자의 매도세가 이어졌다.",
]


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
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


def logits_for(sess, tokenizer, texts, pad_id, batch_size=32) -> np.ndarray:
    return np.concatenate([sess.run(["logits"], batch_inputs(tokenizer, texts[i : i + batch_size], pad_id))[0]
                           for i in range(0, len(texts), batch_size)])


def scores(gold: list[int], logits: np.ndarray, n_labels: int) -> dict:
    pred = logits.argmax(1)
    return {"accuracy": float((pred == np.array(gold)).mean()),
            "macro_f1": float(f1_score(gold, pred, average="macro")),
            "confusion": confusion_matrix(gold, pred, labels=list(range(n_labels))).tolist()}


def latency_ms(sess, tokenizer, texts, pad_id, batch: int, tokens: int, repeats: int = 20) -> float:
    """Milliseconds per example for batches of `batch` texts cut to exactly `tokens` tokens."""
    feed = batch_inputs(tokenizer, texts[:batch], pad_id)
    feed = {k: v[:, :tokens] for k, v in feed.items()}
    sess.run(["logits"], feed)
    start = time.perf_counter()
    for _ in range(repeats):
        sess.run(["logits"], feed)
    return (time.perf_counter() - start) / repeats / batch * 1000


def main() -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertConfig, BertModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", type=Path, required=True, help="pruned encoder dir (config + tokenizer)")
    ap.add_argument("--trained", type=Path, required=True, help="finetune.py output dir")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True, help="model directory to write")
    ap.add_argument("--golden", type=Path, required=True, help="golden parity file to write")
    ap.add_argument("--reports", type=Path, nargs="*", default=[], help="conversion/pruning reports")
    ap.add_argument("--version", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    training = json.loads((args.trained / "training.json").read_text())
    labels, max_length = training["labels"], training["max_length"]
    tokenizer = Tokenizer.from_file(str(args.encoder / "tokenizer.json"))
    tokenizer.enable_truncation(max_length)
    tokenizer.no_padding()
    pad_id = tokenizer.token_to_id("<pad>")

    encoder = BertModel(BertConfig.from_pretrained(args.encoder, attn_implementation="eager"), add_pooling_layer=False)
    model = MeanPoolClassifier(encoder, len(labels))
    model.load_state_dict(torch.load(args.trained / "classifier.pt"))
    model.eval()

    work = Path(tempfile.mkdtemp())
    fp32_path, int8_path = work / "model.fp32.onnx", work / "model.int8.onnx"
    sample = batch_inputs(tokenizer, ["a short text", "a somewhat longer text to pad the batch"], pad_id)
    torch.onnx.export(
        model, (torch.from_numpy(sample["input_ids"]), torch.from_numpy(sample["attention_mask"])),
        str(fp32_path), input_names=["input_ids", "attention_mask"], output_names=["logits"],
        dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
                      "logits": {0: "batch"}},
        opset_version=17, dynamo=False)

    test = load_split(args.data / "test.jsonl")
    texts, gold = [x["text"] for x in test], [labels.index(x["label"]) for x in test]
    fp32 = ort_session(fp32_path, args.threads)

    # Parity on padded batches: mixed lengths, so most rows carry padding.
    check_texts = texts[:24] + KOREAN_SAMPLES
    feed = batch_inputs(tokenizer, check_texts, pad_id)
    with torch.no_grad():
        torch_logits = model(torch.from_numpy(feed["input_ids"]), torch.from_numpy(feed["attention_mask"])).numpy()
    onnx_logits = fp32.run(["logits"], feed)[0]
    parity = float(np.abs(torch_logits - onnx_logits).max())
    print(f"  fp32 ONNX vs PyTorch on a padded batch of {len(check_texts)}: max |diff| {parity:.2e}")
    if parity > 1e-3:
        raise SystemExit(f"export parity failed: {parity}")

    quantize_dynamic(str(fp32_path), str(int8_path), per_channel=True, weight_type=QuantType.QInt8)
    int8 = ort_session(int8_path, args.threads)
    results = {"fp32": scores(gold, logits_for(fp32, tokenizer, texts, pad_id), len(labels)),
               "int8": scores(gold, logits_for(int8, tokenizer, texts, pad_id), len(labels))}
    for name, path, sess in (("fp32", fp32_path, fp32), ("int8", int8_path, int8)):
        r = results[name]
        r["size_mb"] = round(path.stat().st_size / 1e6, 1)
        r["ms_per_example_64_tokens_batch_1"] = round(latency_ms(sess, tokenizer, texts, pad_id, 1, 64), 2)
        r["ms_per_example_64_tokens_batch_32"] = round(latency_ms(sess, tokenizer, texts, pad_id, 32, 64, 5), 2)
        r[f"ms_per_example_{max_length}_tokens_batch_32"] = round(
            latency_ms(sess, tokenizer, texts, pad_id, 32, max_length, 5), 2)
        print(f"  {name}: test accuracy {r['accuracy']:.4f}, macro-F1 {r['macro_f1']:.4f}, {r['size_mb']} MB, "
              f"{r['ms_per_example_64_tokens_batch_1']} ms/example at 64 tokens (batch 1), "
              f"{r['ms_per_example_64_tokens_batch_32']} ms (batch 32)")
    chosen = "int8" if results["int8"]["accuracy"] >= results["fp32"]["accuracy"] - 0.01 else "fp32"
    print(f"  shipping {chosen}")
    chosen_path, chosen_sess = (int8_path, int8) if chosen == "int8" else (fp32_path, fp32)

    args.out.mkdir(parents=True, exist_ok=True)
    os.replace(chosen_path, args.out / "model.onnx")
    (args.out / "tokenizer.json").write_text(tokenizer.to_str())
    config = json.loads((args.encoder / "config.json").read_text())
    config.update({
        "architectures": ["MeanPoolClassifier"], "problem_type": "single_label_classification",
        "id2label": {str(i): l for i, l in enumerate(labels)}, "label2id": {l: i for i, l in enumerate(labels)},
        "max_length": max_length, "model_version": args.version, "pooling": "mean",
        "quantization": "int8 dynamic, per-channel" if chosen == "int8" else "none",
    })
    config.pop("_name_or_path", None)
    (args.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    # Golden file: single texts and one padded batch, logits from the shipped model.
    # Article openings only (the model reads the first max_length tokens anyway): enough to pin
    # the outputs without copying whole articles into the repository.
    golden_texts = [t[:600] for t in texts[:30]] + KOREAN_SAMPLES
    singles = [chosen_sess.run(["logits"], batch_inputs(tokenizer, [t], pad_id))[0][0] for t in golden_texts]
    batch = chosen_sess.run(["logits"], batch_inputs(tokenizer, golden_texts[:16], pad_id))[0]
    golden = {
        "model_dir": args.out.name, "model_version": args.version, "labels": labels,
        "cases": [{"text": t, "label": labels[int(np.argmax(l))], "logits": [float(x) for x in l]}
                  for t, l in zip(golden_texts, singles)],
        "padded_batch": {"texts": golden_texts[:16], "logits": [[float(x) for x in row] for row in batch]},
    }
    args.golden.parent.mkdir(parents=True, exist_ok=True)
    args.golden.write_text(json.dumps(golden, ensure_ascii=False, indent=1) + "\n")

    report = {"chosen": chosen, "export_parity_max_abs": parity, "test_size": len(test), **results,
              "training": training}
    for path in args.reports:
        report[path.stem] = json.loads(path.read_text())
    (args.trained / "report.json").write_text(json.dumps(report, indent=2))
    print(f"  wrote {args.out} and {args.golden}")


if __name__ == "__main__":
    sys.exit(main())

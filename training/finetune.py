"""Fine-tune the pruned encoder on the labelled news articles (CPU, bounded time).

Word embeddings stay frozen: 30k rows would otherwise drift on a few hundred English articles
and take Korean with them. Loss is cross-entropy weighted by inverse square-root class frequency
so that the small classes (health, entertainment) are not drowned by politics. The epoch with
the best validation macro-F1 is kept; the test split is never looked at here.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from tokenizers import Tokenizer

from classifier import MeanPoolClassifier


def load_split(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def encode(tokenizer: Tokenizer, texts: list[str], max_length: int, pad_id: int):
    """Pad to the longest in the batch, as the service does; truncation is the tokenizer's own."""
    tokenizer.enable_truncation(max_length)
    ids = [e.ids for e in tokenizer.encode_batch(texts)]
    width = max(len(i) for i in ids)
    input_ids = torch.full((len(ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, : len(seq)] = torch.tensor(seq)
        mask[row, : len(seq)] = 1
    return input_ids, mask


def evaluate(model, tokenizer, items, labels, max_length, pad_id, batch_size=32):
    model.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            ids, mask = encode(tokenizer, [x["text"] for x in chunk], max_length, pad_id)
            preds += model(ids, mask).argmax(-1).tolist()
    gold = [labels.index(x["label"]) for x in items]
    acc = float(np.mean(np.array(preds) == np.array(gold)))
    return acc, float(f1_score(gold, preds, average="macro"))


def main() -> None:
    from transformers import BertModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", type=Path, required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--head-lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-seconds", type=float, default=2400, help="stop after this many seconds")
    ap.add_argument("--train-on-val", action="store_true",
                    help="final fit: add the validation split to training and keep the last epoch "
                         "(choose --epochs from a run without this flag)")
    args = ap.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(args.threads)
    labels = json.loads((args.data / "labels.json").read_text())
    train, val = load_split(args.data / "train.jsonl"), load_split(args.data / "val.jsonl")
    if args.train_on_val:
        train, val = train + val, []
    tokenizer = Tokenizer.from_file(str(args.encoder / "tokenizer.json"))
    pad_id = tokenizer.token_to_id("<pad>")

    encoder = BertModel.from_pretrained(args.encoder, add_pooling_layer=False, attn_implementation="eager")
    encoder.embeddings.word_embeddings.weight.requires_grad_(False)
    model = MeanPoolClassifier(encoder, len(labels))
    counts = np.bincount([labels.index(x["label"]) for x in train], minlength=len(labels))
    weights = torch.tensor((counts.max() / counts) ** 0.5, dtype=torch.float)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    enc_params = [p for p in model.encoder.parameters() if p.requires_grad]
    optim = torch.optim.AdamW([{"params": enc_params, "lr": args.lr},
                               {"params": model.head.parameters(), "lr": args.head_lr}], weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    total = steps_per_epoch * args.epochs
    warmup = max(1, total // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / max(1, total - warmup)))

    print(f"  {len(train)} train / {len(val)} val, labels {labels}, class weights {weights.numpy().round(2)}")
    print(f"  {args.epochs} epochs x {steps_per_epoch} steps, batch {args.batch_size}, {args.max_length} tokens, "
          f"{args.threads} threads")
    start, best, history, step = time.time(), (-1.0, None), [], 0
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = list(range(len(train)))
        random.shuffle(order)
        running = 0.0
        for b in range(steps_per_epoch):
            batch = [train[i] for i in order[b * args.batch_size : (b + 1) * args.batch_size]]
            ids, mask = encode(tokenizer, [x["text"] for x in batch], args.max_length, pad_id)
            target = torch.tensor([labels.index(x["label"]) for x in batch])
            loss = loss_fn(model(ids, mask), target)
            optim.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optim.step()
            sched.step()
            step += 1
            running += loss.item()
            if step % 10 == 0:
                print(f"  epoch {epoch} step {step}/{total} loss {running / (b + 1):.4f} "
                      f"({time.time() - start:.0f}s)", flush=True)
            if time.time() - start > args.max_seconds:
                break
        if val:
            acc, f1 = evaluate(model, tokenizer, val, labels, args.max_length, pad_id)
        else:  # final fit on train + val: no held-out data left, keep the last epoch
            acc, f1 = float("nan"), float(epoch)
        history.append({"epoch": epoch, "train_loss": running / (b + 1), "val_accuracy": acc, "val_macro_f1": f1})
        print(f"  epoch {epoch} done: val accuracy {acc:.4f} macro-F1 {f1:.4f} ({time.time() - start:.0f}s)",
              flush=True)
        if f1 > best[0]:
            best = (f1, {k: v.clone() for k, v in model.state_dict().items()})
        if time.time() - start > args.max_seconds:
            print(f"  time budget of {args.max_seconds:.0f}s reached")
            break

    model.load_state_dict(best[1])
    args.out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out / "classifier.pt")
    summary = {"labels": labels, "max_length": args.max_length, "epochs_run": len(history),
               "train_on_val": args.train_on_val,
               "seconds": round(time.time() - start, 1), "history": history,
               "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("encoder", "data", "out")},
               "train_size": len(train), "val_size": len(val)}
    (args.out / "training.json").write_text(json.dumps(summary, indent=2))
    print(f"  kept epoch {history[[h['val_macro_f1'] for h in history].index(best[0])]['epoch']}; wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())

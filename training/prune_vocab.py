"""Prune the 250,002-piece multilingual vocabulary to the pieces English and Korean text use.

The word-embedding matrix is 96M of the encoder's 118M parameters, and almost all of those rows
belong to scripts this service never sees. We keep: the special tokens; every piece the
tokenizer produces on the English training text (training + validation splits, never the test
split) and on Korean text shipped in registry packages; every piece containing Hangul; and every
single-character piece, so that any text still tokenizes as it did wherever its pieces are kept.
The kept ids keep their original order, so the special tokens keep ids 0-3.

The cut is measured on held-out Korean text (never used to choose pieces): the change in token
count and the cosine between mean-pooled embeddings from the full and the pruned encoder.
"""

from __future__ import annotations

import argparse
import html
import json
import re
import sys
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

HANGUL = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")


def read_texts(paths: list[Path]) -> list[str]:
    """Plain text from .txt, .dic (one word per line), .html and .jsonl files."""
    texts: list[str] = []
    for path in paths:
        raw = path.read_text(encoding="utf-8", errors="ignore")
        if path.suffix == ".jsonl":
            texts += [json.loads(line)["text"] for line in raw.splitlines() if line.strip()]
        elif path.suffix in (".html", ".xhp", ".htm"):
            body = html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"(?s)<(script|style).*?</\1>", " ", raw)))
            texts += [" ".join(p.split()) for p in body.split("\n") if p.strip()]
        elif path.suffix == ".dic":
            texts += [line.split("/")[0] for line in raw.splitlines()[1:] if line.strip()]
        else:
            texts += [line.strip() for line in raw.splitlines() if line.strip()]
    return [t for t in texts if t]


def kept_ids(tokenizer: Tokenizer, pieces: list[str], texts: list[str]) -> list[int]:
    keep = {0, 1, 2, 3}
    for enc in tokenizer.encode_batch(texts, add_special_tokens=False):
        keep.update(enc.ids)
    for i, piece in enumerate(pieces):
        if len(piece.lstrip("\u2581")) <= 1 or HANGUL.search(piece):
            keep.add(i)
    return sorted(keep)


def pruned_tokenizer_json(full: dict, keep: list[int]) -> dict:
    new_id = {old: new for new, old in enumerate(keep)}
    out = json.loads(json.dumps(full))
    out["model"]["vocab"] = [full["model"]["vocab"][i] for i in keep]
    out["model"]["unk_id"] = new_id[full["model"]["unk_id"]]
    out["added_tokens"] = [dict(t, id=new_id[t["id"]]) for t in full["added_tokens"] if t["id"] in new_id]
    for special in out["post_processor"]["special_tokens"].values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    return out


def embeddings(model, tokenizer: Tokenizer, texts: list[str], max_len: int = 256) -> np.ndarray:
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text).ids[:max_len]
            v = model(input_ids=torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
            out.append(v / np.linalg.norm(v))
    return np.stack(out)


def main() -> None:
    from transformers import BertModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, required=True, help="converted full-vocabulary BertModel")
    ap.add_argument("--tokenizer", type=Path, required=True)
    ap.add_argument("--english", type=Path, nargs="+", required=True)
    ap.add_argument("--korean", type=Path, nargs="+", required=True)
    ap.add_argument("--held-out", type=Path, nargs="+", required=True, help="Korean text to measure the cut on")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-cosine", type=float, default=0.99)
    args = ap.parse_args()

    full_json = json.loads(args.tokenizer.read_text())
    pieces = [p for p, _ in full_json["model"]["vocab"]]
    full_tok = Tokenizer.from_file(str(args.tokenizer))
    english, korean = read_texts(args.english), read_texts(args.korean)
    print(f"  choosing pieces from {len(english)} English and {len(korean)} Korean texts")
    keep = kept_ids(full_tok, pieces, english + korean)
    print(f"  kept {len(keep)} of {len(pieces)} pieces")

    pruned_json = pruned_tokenizer_json(full_json, keep)
    pruned_tok = Tokenizer.from_str(json.dumps(pruned_json))
    full_model = BertModel.from_pretrained(args.model, add_pooling_layer=False).eval()
    full_params = sum(p.numel() for p in full_model.parameters())
    pruned_model = BertModel.from_pretrained(args.model, add_pooling_layer=False).eval()
    rows = full_model.embeddings.word_embeddings.weight.data[torch.tensor(keep)].clone()
    pruned_model.resize_token_embeddings(len(keep))
    pruned_model.embeddings.word_embeddings.weight.data.copy_(rows)
    pruned_model.config.vocab_size = len(keep)
    pruned_params = sum(p.numel() for p in pruned_model.parameters())
    print(f"  parameters: {full_params / 1e6:.1f}M -> {pruned_params / 1e6:.1f}M")

    held_out = [t for t in read_texts(args.held_out) if len(t) >= 40 and HANGUL.search(t)]
    full_tokens = sum(len(e.ids) for e in full_tok.encode_batch(held_out))
    pruned_tokens = sum(len(e.ids) for e in pruned_tok.encode_batch(held_out))
    unk = pruned_json["model"]["unk_id"]
    unknowns = sum(e.ids.count(unk) for e in pruned_tok.encode_batch(held_out))
    sample = held_out[:: max(1, len(held_out) // 150)][:150]
    cos = (embeddings(full_model, full_tok, sample) * embeddings(pruned_model, pruned_tok, sample)).sum(1)
    report = {
        "pieces_full": len(pieces), "pieces_kept": len(keep),
        "parameters_full": full_params, "parameters_pruned": pruned_params,
        "held_out_texts": len(held_out), "held_out_tokens_full": full_tokens,
        "held_out_tokens_pruned": pruned_tokens,
        "held_out_token_change": pruned_tokens / full_tokens - 1, "held_out_unknown_tokens": unknowns,
        "embedding_cosine_texts": len(sample),
        "embedding_cosine_mean": float(cos.mean()), "embedding_cosine_min": float(cos.min()),
    }
    print(f"  held-out Korean: {len(held_out)} texts, tokens {full_tokens} -> {pruned_tokens} "
          f"({report['held_out_token_change']:+.2%}), <unk> {unknowns}; embedding cosine vs full "
          f"mean {cos.mean():.5f} min {cos.min():.5f} over {len(sample)} texts")
    if cos.mean() < args.min_cosine:
        raise SystemExit(f"pruning check failed: mean cosine {cos.mean():.5f} < {args.min_cosine}")
    args.out.mkdir(parents=True, exist_ok=True)
    pruned_model.save_pretrained(args.out)
    (args.out / "tokenizer.json").write_text(json.dumps(pruned_json, ensure_ascii=False))
    (args.out / "pruning.json").write_text(json.dumps(report, indent=2))
    print(f"  wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())

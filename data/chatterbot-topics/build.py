"""Build chatterbot_topics.jsonl (6 topics) from the English files of the `chatterbot-corpus` wheel.

    pip download --no-deps chatterbot-corpus==1.3.3 -d "$W" && unzip -q "$W"/chatterbot_corpus-*.whl -d "$W/cc"
    python data/chatterbot-topics/build.py "$W/cc/chatterbot_corpus/data/english"

Every line of every conversation (questions and answers) is a text labeled with its file's category; multi-line
entries (code blocks) and texts under 3 words are dropped, exact-text duplicates (case-insensitive) kept once
(a text in two categories is dropped). Classes with more than 400 texts are sampled down to 400 (seeded).
Split per class: 25% test, 8% valid, the rest train.
"""

import json
import random
import sys
from pathlib import Path

import yaml

OUT = Path(__file__).with_name("chatterbot_topics.jsonl")
TOPICS = ["ai", "coding", "emotion", "literature", "tech_support", "trivia"]
CAP = 400


def main(folder: str) -> None:
    by_text: dict[str, set[str]] = {}
    first: dict[str, str] = {}
    for topic in TOPICS:
        doc = yaml.safe_load(Path(folder, f"{topic}.yml").read_text())
        for conv in doc["conversations"]:
            for line in conv:
                t = str(line).strip()
                if "\n" in t or len(t.split()) < 3:
                    continue
                key = " ".join(t.lower().split())
                by_text.setdefault(key, set()).add(topic)
                first.setdefault(key, " ".join(t.split()))
    rng = random.Random(0)
    out = []
    for topic in TOPICS:
        texts = sorted(first[k] for k, ts in by_text.items() if ts == {topic})
        rng.shuffle(texts)
        texts = texts[:CAP]
        n_test, n_valid = round(0.25 * len(texts)), round(0.08 * len(texts))
        for i, t in enumerate(texts):
            split = "test" if i < n_test else "valid" if i < n_test + n_valid else "train"
            out.append({"text": t, "label": topic, "split": split})
    rng.shuffle(out)
    with OUT.open("w") as f:
        for i, r in enumerate(out):
            f.write(json.dumps({"id": f"cb:{i}", **r}) + "\n")
    print(f"{len(out)} rows -> {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])

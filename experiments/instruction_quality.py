"""Quality weak supervision on instruction data: planted defects mixed into the 175 Self-Instruct seed tasks, the
`builtin:instruction-quality` LFs, the label model's precision and recall for `drop`.

    python -m experiments.instruction_quality [--per-defect 15] [--seed 0]

The 175 seed pairs (user turn = instruction + input, assistant turn = output) are the clean rows (gold `keep`).
For each defect kind, `--per-defect` seed pairs drawn with the seed get a corrupted copy (gold `drop`): truncated
responses, refusals, empty responses, the prompt echoed back, another record's response copied, PII (e-mail,
phone, Luhn-valid card numbers), leftover template or markup, and looped repetition. The records go straight into
the store as an instruction dataset; the LFs are applied through `labeling.weak.apply_lfs` and the label model
(snorkel and majority) through `fit_label_model`, as `curate lf apply` / `curate label` do. A record is predicted
`drop` when P(drop) > 0.5; a record on which every LF abstained counts as `keep` (no defect found).
Writes docs/results/instruction_quality.json.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
DATASET = "seed_quality"


def seed_file() -> Path:
    """The bundled Self-Instruct seed tasks (data/self-instruct-seed/, with their attribution)."""
    return ROOT / "data" / "self-instruct-seed" / "seed_tasks.jsonl"


def seed_pairs(path: Path | None = None) -> list[dict]:
    """(id, prompt, response) per seed task: prompt = instruction, plus the input on a new paragraph."""
    out = []
    for line in (path or seed_file()).read_text(encoding="utf-8").splitlines():
        t = json.loads(line)
        inst = t["instances"][0]
        prompt = t["instruction"].strip() + (f"\n\n{inst['input'].strip()}" if inst["input"].strip() else "")
        out.append({"id": t["id"], "prompt": prompt, "response": inst["output"].strip()})
    return out


def insert_instructions(store, dataset: str, pairs: list[dict], labels=("keep", "drop")) -> list[int]:
    """Create (or extend) an instruction dataset straight in the store (no ingest); returns the record ids.
    `pairs`: dicts with prompt, response and optionally id, gold ('keep'/'drop'), meta."""
    import polars as pl

    from curation.normalize import input_hash
    from curation.store import now

    with store.transaction() as cur:
        if not cur.execute("SELECT 1 FROM store.datasets WHERE name = ?", [dataset]).fetchall():
            cur.execute("INSERT INTO store.datasets (name, labels, contract_version, settings, created_at, task) "
                        "VALUES (?, ?, 'test', NULL, ?, 'instruction')", [dataset, list(labels), now()])
        start = store.next_id(cur, "store.records", "record_id")
        ids = list(range(start, start + len(pairs)))
        msgs = [json.dumps([{"role": "user", "content": p["prompt"]}, {"role": "assistant", "content": p["response"]}])
                for p in pairs]
        frame = pl.DataFrame({
            "record_id": ids, "source_id": [p.get("id") for p in pairs], "text": [p["prompt"] for p in pairs],
            "meta": [json.dumps(p["meta"]) if p.get("meta") else None for p in pairs],
            "input_hash": [input_hash(m) for m in msgs], "source_row": list(range(1, len(pairs) + 1)),
            "messages": msgs, "response": [p["response"] for p in pairs],
        }, schema_overrides={"source_id": pl.Utf8, "meta": pl.Utf8})
        cur.register("new_rows", frame)
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, "
                    "origin, parent_id, ingest_id, source_row, ingested_at, messages, response) SELECT record_id, ?, "
                    "source_id, text, NULL, meta, input_hash, 'ingest', NULL, NULL, source_row, ?, messages, "
                    "response FROM new_rows", [dataset, now()])
        cur.unregister("new_rows")
        for rid, p in zip(ids, pairs):
            if p.get("gold"):
                cur.execute("INSERT INTO store.gold_labels (record_id, label, source, source_ref, annotator, "
                            "updated_at) VALUES (?, ?, 'imported', 'planted', NULL, ?)", [rid, p["gold"], now()])
    return ids


# -- planted defects --------------------------------------------------------------------------------------
REFUSALS = [
    "As an AI language model, I cannot do that.",
    "I'm sorry, but I cannot help with this request.",
    "I cannot assist with that request.",
    "As an AI language model, I don't have personal opinions, but {start}",
    "I'm sorry, but I can't provide that information.",
    "I am unable to answer this question.",
    "I’m sorry, but I cannot fulfill this request as it goes against my guidelines.",
    "I must decline to answer this.",
]
EMPTIES = ["", " ", "...", "\n", "-", "N/A."]
TEMPLATES = [
    "<|im_start|>assistant\n{r}<|im_end|>",
    "### Response:\n{r}",
    "[INST] {p} [/INST] {r}",
    "{r}\n\n### Instruction:",
    "Answer: {{input}}",
    "{{{{ response }}}}",
    "<p>{r}</p><br/>",
    "{r}&nbsp;&nbsp;</div>",
    "<s>{r}</s>",
]


def _luhn_complete(prefix: str) -> str:
    from labeling.builtin.instruction_quality import luhn_ok

    return next(prefix + str(d) for d in range(10) if luhn_ok(prefix + str(d)))


def _pii(rng: random.Random, r: str) -> str:
    kind = rng.choice(["email", "phone", "card"])
    if kind == "email":
        who = rng.choice(["john.smith", "maria_g", "k.lee2019", "support"])
        val = f"{who}@{rng.choice(['gmail.com', 'example.org', 'corp-mail.co.uk'])}"
        return rng.choice([f"{r} Contact me at {val}.", f"Email {val} for details. {r}"])
    if kind == "phone":
        val = rng.choice([f"({rng.randint(200, 999)}) {rng.randint(200, 999)}-{rng.randint(1000, 9999)}",
                          f"+44 20 {rng.randint(1000, 9999)} {rng.randint(1000, 9999)}",
                          f"{rng.randint(200, 999)}.{rng.randint(200, 999)}.{rng.randint(1000, 9999)}"])
        return f"{r} Call {val} for more."
    digits = _luhn_complete("4" + "".join(str(rng.randint(0, 9)) for _ in range(14)))
    val = rng.choice([digits, " ".join(digits[i:i + 4] for i in range(0, 16, 4))])
    return f"{r} My card number is {val}."


def _truncate(rng: random.Random, r: str) -> str:
    cut = int(len(r) * rng.uniform(0.35, 0.8))
    out = r[:cut]
    if rng.random() < 0.5 and " " in out:  # at a word boundary, else mid-word
        out = out[:out.rfind(" ")]
    return out.rstrip()


def _repeat(rng: random.Random, r: str) -> str:
    words = r.split()
    if rng.random() < 0.5 or len(words) < 6:
        return " ".join([r] * rng.randint(3, 5))
    k = rng.randint(len(words) // 3, len(words) - 1)
    loop = " ".join(words[k - 3:k] if k >= 3 else words[:3])
    return " ".join(words[:k] + [loop] * rng.randint(5, 8))


def plant(pairs: list[dict], per_defect: int, seed: int) -> list[dict]:
    """Corrupted copies of seed pairs, `per_defect` for each defect kind; gold `drop`, meta.defect names it."""
    rng = random.Random(seed)
    long_ones = [p for p in pairs if len(p["response"].split()) >= 8]
    out = []

    def add(kind: str, src: dict, response: str) -> None:
        out.append({"id": f"{src['id']}:{kind}", "prompt": src["prompt"], "response": response, "gold": "drop",
                    "meta": {"defect": kind}})

    for src in rng.sample(long_ones, per_defect):
        add("truncated", src, _truncate(rng, src["response"]))
    for src in rng.sample(pairs, per_defect):
        t = rng.choice(REFUSALS)
        add("refusal", src, t.format(start=" ".join(src["response"].split()[:12])))
    for src in rng.sample(pairs, per_defect):
        add("empty", src, rng.choice(EMPTIES))
    for src in rng.sample(pairs, per_defect):
        add("echo", src, src["prompt"] if rng.random() < 0.7 else src["prompt"].split("\n\n")[0])
    for src in rng.sample(long_ones, per_defect):  # another record's (long) response copied
        other = rng.choice([p for p in long_ones if p is not src])
        add("duplicate", src, other["response"])
    for src in rng.sample(pairs, per_defect):
        add("pii", src, _pii(rng, src["response"]))
    for src in rng.sample(pairs, per_defect):
        add("template", src, rng.choice(TEMPLATES).format(r=src["response"], p=src["prompt"]))
    for src in rng.sample(long_ones, per_defect):
        add("repetition", src, _repeat(rng, src["response"]))
    return out


# -- measurement ------------------------------------------------------------------------------------------
def prf(pred_drop: np.ndarray, gold_drop: np.ndarray) -> dict:
    tp = int((pred_drop & gold_drop).sum())
    fp = int((pred_drop & ~gold_drop).sum())
    fn = int((~pred_drop & gold_drop).sum())
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / (p + r), 4) if p + r else 0.0,
            "tp": tp, "fp": fp, "fn": fn}


def run(per_defect: int = 15, seed: int = 0, workdir: Path | None = None) -> dict:
    from curation.settings import Settings
    from curation.store import Store
    from labeling.weak import apply_lfs, fit_label_model, load_matrix

    clean = [p | {"gold": "keep", "meta": {"defect": None}} for p in seed_pairs()]
    planted = plant(seed_pairs(), per_defect, seed)
    workdir = workdir or Path(tempfile.mkdtemp(prefix="curate-iq-"))
    store = Store.open(Settings(db=workdir / "iq.duckdb"))
    try:
        insert_instructions(store, DATASET, clean + planted)
        applied = apply_lfs(store, DATASET, "builtin:instruction-quality")
        mat = load_matrix(store, DATASET, applied["lf_set_id"])
        L, names = mat["L"], mat["names"]
        frame = store.frame("SELECT record_id, r.meta ->> '$.defect' AS defect, g.label AS gold FROM store.records r "
                            "JOIN store.gold_labels g USING (record_id) WHERE dataset = ? ORDER BY record_id",
                            [DATASET])
        gold_drop = (frame["gold"] == "drop").to_numpy()
        defect = frame["defect"].to_list()
        covered = (L != -1).any(axis=1)
        models = {}
        for kind in ("snorkel", "majority"):
            fit = fit_label_model(store, DATASET, kind, seed=seed)
            w = store.frame("SELECT record_id, probs FROM main.weak_labels WHERE model_id = ? ORDER BY record_id",
                            [fit["model_id"]])
            p_keep = np.asarray([p[0] for p in w["probs"].to_list()])
            pred_drop = (1 - p_keep > 0.5) & covered
            per_kind = {}
            for k in sorted({d for d in defect if d}):
                sel = np.asarray([d == k for d in defect])
                per_kind[k] = {"planted": int(sel.sum()), "recall": round(float(pred_drop[sel].mean()), 4)}
            fps = [{"source_id": sid, "lfs": [names[j] for j in np.nonzero(L[i] == 1)[0]]}
                   for i, sid in enumerate(store.frame("SELECT source_id FROM store.records WHERE dataset = ? "
                                                       "ORDER BY record_id", [DATASET])["source_id"].to_list())
                   if pred_drop[i] and not gold_drop[i]]
            models[kind] = {"model_id": fit["model_id"], "drop": prf(pred_drop, gold_drop),
                            "recall_by_defect": per_kind, "false_drops": fps,
                            "mean_p_keep": {"clean": round(float(p_keep[~gold_drop].mean()), 4),
                                            "planted": round(float(p_keep[gold_drop].mean()), 4)}}
        lfs = []
        for j, n in enumerate(names):
            fired = L[:, j] != -1
            lab = mat["labels"][int(L[fired, j][0])] if fired.any() else None
            right = (L[fired, j] == 1) == gold_drop[fired]
            lfs.append({"lf": n, "label": lab, "fired_clean": int((fired & ~gold_drop).sum()),
                        "fired_planted": int((fired & gold_drop).sum()),
                        "accuracy": round(float(right.mean()), 4) if fired.any() else None,
                        "engine": next(x["engine"] for x in applied["lfs"] if x["lf"] == n)})
        return {"dataset": {"clean": len(clean), "planted": len(planted), "per_defect": per_defect, "seed": seed,
                            "source": "Self-Instruct seed tasks (175, Apache-2.0)"},
                "coverage": round(float(covered.mean()), 4), "all_abstain": int((~covered).sum()),
                "lfs": lfs, "label_models": models, "apply_seconds": applied["seconds"]}
    finally:
        store.close()


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-defect", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    res = run(args.per_defect, args.seed)
    d = res["dataset"]
    print(f"\nSelf-Instruct seed tasks: {d['clean']} clean + {d['planted']} planted defects "
          f"({d['per_defect']} per kind, seed {d['seed']}); coverage {res['coverage']:.1%}")
    print(f"\n{'LF':<26}{'label':>6}{'engine':>8}{'clean':>7}{'planted':>9}{'acc':>7}")
    for x in res["lfs"]:
        acc = "-" if x["accuracy"] is None else f"{x['accuracy']:.2f}"
        print(f"{x['lf']:<26}{x['label'] or '-':>6}{x['engine']:>8}{x['fired_clean']:>7}{x['fired_planted']:>9}"
              f"{acc:>7}")
    print(f"\n{'label model':<12}{'P(drop)':>9}{'R(drop)':>9}{'F1':>7}{'TP':>5}{'FP':>5}{'FN':>5}   recall by defect")
    for kind, m in res["label_models"].items():
        x = m["drop"]
        by = ", ".join(f"{k} {v['recall']:.2f}" for k, v in m["recall_by_defect"].items())
        print(f"{kind:<12}{x['precision']:>9.3f}{x['recall']:>9.3f}{x['f1']:>7.3f}{x['tp']:>5}{x['fp']:>5}"
              f"{x['fn']:>5}   {by}")
    for kind, m in res["label_models"].items():
        for fp in m["false_drops"]:
            print(f"  {kind} false drop: {fp['source_id']} ({', '.join(fp['lfs'])})")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "instruction_quality.json"
    path.write_text(json.dumps(res, indent=2, default=str) + "\n")
    print(f"results: {path}")
    return res


if __name__ == "__main__":
    main()

"""Snapshot frame → train/val/test examples with hard (gold) and soft (weak) targets and sample weights.

Pure: a polars frame in the snapshot format (docs/ARCHITECTURE.md) in, arrays and HF `datasets` out; no DuckDB.

Targets per record, in the dataset's label order:
- gold label (`label`, imported or annotation): one-hot, weight `gold_weight`;
- else weak label (only where `weak_label` is set, i.e. some LF voted, or the label model's all-abstain policy
  gave one): `weak_targets="hard"` (default) the one-hot of the label model's stored, tie-broken label, or
  `"soft"` its probabilities (`weak_probs`); weight `weak_weight`, times the label model's margin (top −
  runner-up probability) with `weak_confidence_weighting` (default), so a tie teaches nothing;
- else nothing: the record is left out of training and counted as `unlabeled`.
`label_sources` restricts training to gold or weak labels only. Augmented rows (origin `augment`) carry their
parent's label in the snapshot already, so they count as their parents say; they only ever train (never evaluate).
Evaluation (val/test) uses gold labels only; when val has no gold labels, early stopping falls back to the val
weak labels (and says so in the counts).
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from curation.errors import InputError
from training.config import TrainConfig

SPLITS = ("train", "val", "test")


@dataclass
class SplitData:
    """One split's examples, aligned arrays."""

    record_ids: np.ndarray            # int64 (n,)
    texts: list[str]
    targets: np.ndarray               # float32 (n, k): one-hot for gold, probabilities for weak
    weights: np.ndarray               # float32 (n,)
    y: np.ndarray                     # int64 (n,): evaluation class (gold; weak argmax where marked), -1: none
    source: np.ndarray                # str (n,): 'gold' | 'weak'
    leaks: np.ndarray                 # bool (n,): its duplicate component holds a train record (`train_leaks`)
    counts: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.record_ids)

    def subset(self, mask: np.ndarray) -> "SplitData":
        idx = np.flatnonzero(mask)
        return SplitData(self.record_ids[idx], [self.texts[i] for i in idx], self.targets[idx], self.weights[idx],
                         self.y[idx], self.source[idx], self.leaks[idx], dict(self.counts))


def _class_index(frame: pl.DataFrame, labels: list[str]) -> np.ndarray:
    """Gold label → class index (-1 where none); an unknown label is an error naming the record."""
    index = {lab: i for i, lab in enumerate(labels)}
    gold = frame["label"].to_list()
    out = np.full(len(gold), -1, dtype=np.int64)
    for i, lab in enumerate(gold):
        if lab is None:
            continue
        if lab not in index:
            rid = frame["record_id"][i]
            raise InputError(f"record {rid}, field `label`: {lab!r} is not one of the dataset's labels {labels}")
        out[i] = index[lab]
    return out


def _weak_matrix(frame: pl.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """weak_probs → (n, k) float32 normalised rows, and a mask of rows that have them."""
    n = frame.height
    probs = np.zeros((n, k), dtype=np.float32)
    has = np.zeros(n, dtype=bool)
    if "weak_probs" not in frame.columns:
        return probs, has
    # a NULL weak_label means every LF abstained: its probabilities carry no evidence, so it is not a label
    covered = frame["weak_label"].is_not_null().to_list() if "weak_label" in frame.columns else [True] * n
    for i, p in enumerate(frame["weak_probs"].to_list()):
        if not covered[i]:
            continue
        if p is None or len(p) != k:
            if p is not None:
                raise InputError(f"record {frame['record_id'][i]}, field `weak_probs`: {len(p)} probabilities, "
                                 f"the dataset has {k} labels; refit the label model")
            continue
        row = np.asarray(p, dtype=np.float64)
        s = row.sum()
        if not np.isfinite(s) or s <= 0:
            continue
        probs[i] = row / s
        has[i] = True
    return probs, has


def weak_targets(frame: pl.DataFrame, weak: np.ndarray, labels: list[str], config: TrainConfig) -> np.ndarray:
    """Training targets of weak-labeled rows: the label model's probabilities (`soft`) or the one-hot of its
    stored label (`hard`: the label model's tie-broken decision, `weak_label`)."""
    if config.weak_targets == "soft":
        return weak
    index = {lab: i for i, lab in enumerate(labels)}
    stored = frame["weak_label"].to_list() if "weak_label" in frame.columns else [None] * frame.height
    idx = np.asarray([index.get(v, -1) if v is not None else -1 for v in stored], dtype=np.int64)
    idx = np.where(idx >= 0, idx, weak.argmax(1))
    return np.eye(len(labels), dtype=np.float32)[idx]


def weak_confidence_weights(weak: np.ndarray, config: TrainConfig) -> np.ndarray:
    """Per-row factor on a weak label's loss weight: 1, or with `weak_confidence_weighting` the label model's
    margin (top probability − runner-up; 0 for a tie, 1 for a certain label)."""
    if not config.weak_confidence_weighting or weak.shape[1] < 2:
        return np.ones(len(weak), dtype=np.float32)
    top2 = np.sort(weak, axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]).astype(np.float32)


def train_leaks(frame: pl.DataFrame) -> np.ndarray:
    """Per row: does its duplicate component (exact, near-duplicate or group) also hold a train record? For val
    and test rows that is leakage from train; rows without it form the leakage-free subset (the split check's
    `test_ids_without_train_duplicate`). Without a `component` column, the snapshot's `leaks` flag (the component
    crosses any splits) stands in."""
    if "component" not in frame.columns or frame["component"].null_count() == frame.height:
        return frame["leaks"].fill_null(False).to_numpy().astype(bool)
    comp = frame["component"].to_numpy()
    is_train = (frame["split"] == "train").fill_null(False).to_numpy()
    in_train = np.isin(comp, comp[is_train & ~frame["component"].is_null().to_numpy()])
    return in_train & ~frame["component"].is_null().to_numpy()


def build_splits(frame: pl.DataFrame, labels: list[str], config: TrainConfig) -> dict[str, SplitData]:
    """The snapshot's rows as train/val/test `SplitData` (see the module docstring for the rules)."""
    if not labels:
        raise InputError("the dataset declares no labels; ingest with --labels A,B,...")
    if "split" not in frame.columns or frame["split"].null_count() == frame.height:
        raise InputError("the snapshot has no split; run `curate split` first")
    k = len(labels)
    frame = frame.with_columns(pl.col("leaks").fill_null(False) if "leaks" in frame.columns
                               else pl.lit(False).alias("leaks"))
    gold = _class_index(frame, labels)
    weak, has_weak = _weak_matrix(frame, k)
    has_gold = gold >= 0
    use_gold = config.label_sources in ("gold+weak", "gold")
    use_weak = config.label_sources in ("gold+weak", "weak") and config.weak_weight > 0
    split = np.asarray(frame["split"].to_list(), dtype=object)
    origin = np.asarray(frame["origin"].to_list(), dtype=object) if "origin" in frame.columns \
        else np.full(frame.height, "ingest", dtype=object)
    texts = frame["text"].to_list()
    rids = frame["record_id"].to_numpy().astype(np.int64)
    leaks = train_leaks(frame)
    onehot = np.eye(k, dtype=np.float32)

    out: dict[str, SplitData] = {}
    for name in SPLITS:
        in_split = split == name
        counts = {"rows": int(in_split.sum()), "augmented": int((in_split & (origin == "augment")).sum()),
                  "gold": int((in_split & has_gold).sum()), "weak": int((in_split & has_weak).sum()),
                  "leaks": int((in_split & leaks).sum())}
        if name == "train":
            take_gold = in_split & has_gold & use_gold
            take_weak = in_split & ~take_gold & has_weak & use_weak
            keep = take_gold | take_weak
            targets = np.where(take_gold[:, None], onehot[np.maximum(gold, 0)], weak_targets(frame, weak, labels,
                                                                                               config))
            weights = np.where(take_gold, config.gold_weight,
                               config.weak_weight * weak_confidence_weights(weak, config)).astype(np.float32)
            source = np.where(take_gold, "gold", "weak")
            y = np.where(take_gold, gold, weak.argmax(1))
            counts |= {"used_gold": int(take_gold.sum()), "used_weak": int(take_weak.sum()),
                       "unlabeled": int((in_split & ~keep).sum())}
        else:
            evaluable = in_split & (origin != "augment")
            keep = evaluable & has_gold
            source = np.full(len(split), "gold", dtype=object)
            if name == "val" and not keep.any() and (evaluable & has_weak).any():
                keep = evaluable & has_weak                      # no gold in val: early-stop on weak labels
                source[:] = "weak"
                counts["label_source"] = "weak"
            else:
                counts["label_source"] = "gold"
            y = np.where(has_gold, gold, weak.argmax(1)) if counts["label_source"] == "gold" else weak.argmax(1)
            targets = np.where(has_gold[:, None], onehot[np.maximum(gold, 0)], weak)
            weights = np.ones(len(split), dtype=np.float32)
            counts["evaluated"] = int(keep.sum())
        idx = np.flatnonzero(keep)
        out[name] = SplitData(rids[idx], [texts[i] for i in idx], targets[idx].astype(np.float32),
                              weights[idx], y[idx].astype(np.int64), np.asarray(source)[idx], leaks[idx], counts)
    if len(out["train"]) == 0:
        c = out["train"].counts
        raise InputError(f"no training examples: train has {c['rows']} rows, {c['gold']} with gold and "
                         f"{c['weak']} with weak labels (label_sources={config.label_sources}); "
                         "label some records or fit a label model (`curate label`)")
    return out


def to_hf(data: SplitData, tokenizer, max_length: int):
    """A HF `datasets.Dataset` with `input_ids`, `length`, `targets`, `weight`, `y`, `record_id`."""
    import datasets

    enc = tokenizer(data.texts, truncation=True, max_length=max_length, padding=False)["input_ids"] \
        if data.texts else []
    features = datasets.Features({
        "record_id": datasets.Value("int64"), "input_ids": datasets.Sequence(datasets.Value("int32")),
        "length": datasets.Value("int32"), "targets": datasets.Sequence(datasets.Value("float32")),
        "weight": datasets.Value("float32"), "y": datasets.Value("int64")})
    return datasets.Dataset.from_dict({
        "record_id": data.record_ids, "input_ids": enc, "length": [len(e) for e in enc],
        "targets": data.targets.tolist(), "weight": data.weights, "y": data.y,
    }, features=features)


def length_grouped_batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator | None,
                           mega: int = 50) -> list[np.ndarray]:
    """Batches of similar lengths (less padding). With `rng` (training): shuffle, sort within mega-batches of
    `mega * batch_size`, shuffle the batches, longest batch first (an early out-of-memory). Without `rng`
    (inference): sorted by length, longest first."""
    lengths = np.asarray(lengths)
    if rng is None:
        order = np.argsort(-lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    perm = rng.permutation(len(lengths))
    size = mega * batch_size
    batches = []
    for s in range(0, len(perm), size):
        chunk = perm[s:s + size]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    longest = int(np.argmax([lengths[b].max() for b in batches]))
    batches[0], batches[longest] = batches[longest], batches[0]
    rest = batches[1:]
    rng.shuffle(rest)
    return [batches[0], *rest]


def pad(input_ids: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Dynamic padding to the longest in the batch → (ids, attention_mask) int64 arrays."""
    width = max(len(x) for x in input_ids)
    ids = np.full((len(input_ids), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(input_ids), width), dtype=np.int64)
    for i, x in enumerate(input_ids):
        ids[i, :len(x)] = x
        mask[i, :len(x)] = 1
    return ids, mask


def input_ids(ds) -> list[list[int]]:
    """The token ids of a `to_hf` dataset as Python lists (one Arrow conversion, not one per row)."""
    return ds.with_format("arrow")["input_ids"].to_pylist()


def iter_batches(ds, batch_size: int, pad_id: int, rng: np.random.Generator | None, *,
                 grouped: bool = True) -> Iterator[dict]:
    """Padded numpy batches from a `to_hf` dataset: length-grouped (or, with `grouped=False` and an `rng`, plain
    shuffled batches)."""
    cols = ds.with_format("numpy", columns=["targets", "weight", "y", "length"])[:]
    ids = input_ids(ds)
    if grouped or rng is None:
        batches = length_grouped_batches(cols["length"], batch_size, rng)
    else:
        perm = rng.permutation(len(cols["length"]))
        batches = [perm[i:i + batch_size] for i in range(0, len(perm), batch_size)]
    for b in batches:
        x, m = pad([ids[i] for i in b], pad_id)
        yield {"input_ids": x, "attention_mask": m, "targets": cols["targets"][b], "weight": cols["weight"][b],
               "y": cols["y"][b], "index": b}

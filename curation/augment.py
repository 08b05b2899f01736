"""Augmentation of train rows with nlpaug augmenters that work offline, with lineage.

Pure core: the augmenter registry (`AUGMENTERS`, `get_augmenter`, `parse_augmenters`) and `augment_texts`
(texts in, copies out, reproducible per copy). DuckDB edge: `augment(store, dataset, per_record, augmenters,
seed)`.

Each copy becomes a record (origin 'augment', `parent_id`, the parent's group, its own `input_hash`), a row of
`store.augmentations` (augmenter, params, the copy's own seed) and a train row of the current split set in the
parent's component. Labels are not copied: a copy's gold or weak label is its parent's, resolved through
`parent_id`, so a later change of the parent's label follows. Only train rows are augmented, never rows whose
component leaks into another split, never augmented rows; a copy whose normalised text already exists in the
dataset (or twice in one run) is dropped and counted.

Augmenters (defaults are gentle so the label survives: about one word in ten touched, at most two characters
per word):
  char: keyboard (typos from neighbouring keys), ocr (OCR confusions 0/o, 1/l...), random_char (random
  substitution; `action` = substitute | insert | swap | delete);
  word: word_swap (swap neighbouring words), word_delete (drop words), word_split (split a word in two),
  spelling (common misspellings, nlpaug's English list);
  optional: synonym (WordNet synonyms; needs the NLTK data `wordnet`, `omw-1.4` and
  `averaged_perceptron_tagger_eng` installed locally — it is never downloaded here).
Parameters are given per augmenter as `name:key=value:key=value` (e.g. `keyboard:aug_char_p=0.2`).
"""

import contextlib
import json
import logging
import random
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from curation.errors import CurateError, InputError
from curation.normalize import hash_texts
from curation.store import Store, now

log = logging.getLogger(__name__)


class AugmenterUnavailable(CurateError):
    """An augmenter needs data that is not installed here."""

    exit_code = 2


def _char(module: str, cls: str) -> Callable[..., object]:
    def make(**params: object) -> object:
        import importlib

        return getattr(importlib.import_module(f"nlpaug.augmenter.char.{module}"), cls)(**params)

    return make


def _word(module: str, cls: str) -> Callable[..., object]:
    def make(**params: object) -> object:
        import importlib

        return getattr(importlib.import_module(f"nlpaug.augmenter.word.{module}"), cls)(**params)

    return make


_WORDNET = ("corpora/wordnet", "corpora/omw-1.4", "taggers/averaged_perceptron_tagger_eng")


def wordnet_missing() -> str | None:
    try:
        import nltk
    except ImportError:
        return "the `nltk` package is not installed"
    missing = []
    for res in _WORDNET:
        try:
            nltk.data.find(res)
        except LookupError:
            try:
                nltk.data.find(res + ".zip")
            except LookupError:
                missing.append(res.split("/")[1])
    if missing:
        return (f"NLTK data {', '.join(missing)} not found in {nltk.data.path[:3]}...; install it where a "
                f"network is allowed (`python -m nltk.downloader {' '.join(m for m in missing)}`) and copy it "
                "to one of those folders or point NLTK_DATA at it")
    return None


@dataclass(frozen=True)
class Augmenter:
    name: str
    level: str                                   # 'char' | 'word'
    factory: Callable[..., object]
    defaults: dict = field(default_factory=dict)
    description: str = ""
    missing: Callable[[], str | None] = lambda: None

    def build(self, params: dict | None = None) -> object:
        why = self.missing()
        if why:
            raise AugmenterUnavailable(f"augmenter {self.name!r} is not available: {why}. The other augmenters "
                                       "work offline.")
        p = self.defaults | (params or {})
        try:
            return self.factory(**p)
        except TypeError as e:
            raise InputError(f"augmenter {self.name!r}: bad parameter ({e}); defaults: {self.defaults}") from None


_GENTLE_CHAR = {"aug_word_p": 0.1, "aug_char_p": 0.1, "aug_char_max": 2, "aug_word_max": 4}
AUGMENTERS: dict[str, Augmenter] = {a.name: a for a in [
    Augmenter("keyboard", "char", _char("keyboard", "KeyboardAug"),
              _GENTLE_CHAR | {"include_special_char": False, "include_numeric": False},
              "typos from neighbouring keys (QWERTY)"),
    Augmenter("ocr", "char", _char("ocr", "OcrAug"), dict(_GENTLE_CHAR), "OCR confusions (0/o, 1/l, 8/B ...)"),
    Augmenter("random_char", "char", _char("random", "RandomCharAug"),
              _GENTLE_CHAR | {"action": "substitute"}, "random characters: substitute | insert | swap | delete"),
    Augmenter("word_swap", "word", _word("random", "RandomWordAug"),
              {"action": "swap", "aug_p": 0.1, "aug_max": 3}, "swap neighbouring words"),
    Augmenter("word_delete", "word", _word("random", "RandomWordAug"),
              {"action": "delete", "aug_p": 0.1, "aug_max": 3}, "delete random words"),
    Augmenter("word_split", "word", _word("split", "SplitAug"), {"aug_p": 0.1, "aug_max": 3},
              "split a word in two"),
    Augmenter("spelling", "word", _word("spelling", "SpellingAug"), {"aug_p": 0.1, "aug_max": 3},
              "common English misspellings (nlpaug's list)"),
    Augmenter("synonym", "word", _word("synonym", "SynonymAug"), {"aug_src": "wordnet", "aug_p": 0.1, "aug_max": 3},
              "WordNet synonyms (optional: needs NLTK WordNet data installed)", wordnet_missing),
]}


def get_augmenter(name: str) -> Augmenter:
    try:
        return AUGMENTERS[name]
    except KeyError:
        raise InputError(f"augmenter {name!r}: unknown; valid: {', '.join(AUGMENTERS)}") from None


def _value(v: str) -> object:
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return {"true": True, "false": False, "none": None}.get(v.lower(), v)


def parse_augmenters(spec: str | Sequence[str]) -> list[tuple[str, dict]]:
    """'keyboard,word_swap:aug_p=0.2' -> [('keyboard', {}), ('word_swap', {'aug_p': 0.2})]."""
    items = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    out = []
    for item in items:
        if not item:
            continue
        name, *kvs = item.split(":")
        aug = get_augmenter(name.strip())
        params = {}
        for kv in kvs:
            if "=" not in kv:
                raise InputError(f"augmenter {item!r}: parameter {kv!r} is not key=value")
            k, v = kv.split("=", 1)
            params[k.strip()] = _value(v.strip())
        out.append((aug.name, params))
    if not out:
        raise InputError(f"no augmenter given; valid: {', '.join(AUGMENTERS)}")
    return out


def copy_seed(seed: int, key: int, copy: int) -> int:
    """The seed of one copy: stable for (run seed, parent key, copy index)."""
    return zlib.crc32(f"{seed}:{key}:{copy}".encode()) & 0x7FFFFFFF


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """nlpaug draws from the global `random` and `numpy.random`: seed both, and give the caller's state back."""
    py, npy = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def augment_texts(texts: Sequence[str], per_record: int, augmenters: str | Sequence[str] | list[tuple[str, dict]],
                  seed: int = 0, keys: Sequence[int] | None = None,
                  progress: Callable[[int], None] | None = None) -> tuple[pl.DataFrame, dict]:
    """`per_record` copies of each text; copy j of text i uses augmenter (j + offset_i) mod len(augmenters), so
    every augmenter is used across the data even with one copy per text. `keys` (default: the index) make each
    copy's seed independent of the order of texts.

    Returns (copies: parent (index into texts), copy, augmenter, params (JSON), seed, text) and counts
    {'made', 'failed', 'unchanged', 'failures': {augmenter: {error: count}}}: a copy that raises or returns the
    text unchanged is not made (one that only normalises to the same text is dropped later as a duplicate)."""
    if per_record < 1:
        raise InputError(f"--per-record {per_record}: give 1 or more copies per record")
    specs = augmenters if (augmenters and isinstance(augmenters[0], tuple)) else parse_augmenters(augmenters)
    built = {}
    for name, params in specs:
        built[(name, json.dumps(params, sort_keys=True))] = get_augmenter(name).build(params)
    spec_keys = [(name, json.dumps(params, sort_keys=True)) for name, params in specs]
    keys = list(keys) if keys is not None else list(range(len(texts)))
    rows = []
    counts: dict = {"made": 0, "failed": 0, "unchanged": 0, "failures": {}}
    tick = progress or (lambda n=1: None)
    for i, (text, key) in enumerate(zip(texts, keys)):
        offset = copy_seed(seed, key, -1) % len(spec_keys)
        for j in range(per_record):
            name, pjson = spec_keys[(j + offset) % len(spec_keys)]
            s = copy_seed(seed, key, j)
            try:
                with _seeded(s):
                    res = built[(name, pjson)].augment(text, n=1)
                out = res[0] if isinstance(res, list) else res
                if not isinstance(out, str) or not out.strip():
                    raise ValueError("empty output")
            except Exception as e:  # noqa: BLE001 - nlpaug raises many kinds; counted per augmenter, never hidden
                counts["failed"] += 1
                f = counts["failures"].setdefault(name, {})
                msg = f"{type(e).__name__}: {str(e)[:80]}"
                f[msg] = f.get(msg, 0) + 1
                log.debug("augmenter %s failed on parent %s: %s", name, key, msg)
                continue
            if out == text:
                counts["unchanged"] += 1
                continue
            params = get_augmenter(name).defaults | json.loads(pjson)
            rows.append((i, j, name, json.dumps(params, sort_keys=True), s, out))
        tick(1)
    frame = pl.DataFrame(rows, schema={"parent": pl.Int64, "copy": pl.Int64, "augmenter": pl.String,
                                       "params": pl.String, "seed": pl.Int64, "text": pl.String}, orient="row")
    counts["made"] = frame.height
    return frame, counts


# -- store edge -----------------------------------------------------------------------------------------
def augment(store: Store, dataset: str, per_record: int, augmenters: str | Sequence[str], seed: int = 0, *,
            progress: Callable[[int], None] | None = None, limit: int | None = None) -> dict:
    """Augment the train rows of the dataset's current split set; returns counts (made, inserted, dropped ...).

    `limit` augments only the first `limit` eligible train rows (by record id)."""
    from curation.splits import current_split

    store.dataset(dataset)
    specs = parse_augmenters(augmenters)
    for name, params in specs:   # fail before any work when one is unavailable
        why = get_augmenter(name).missing()
        if why:
            raise AugmenterUnavailable(f"augmenter {name!r} is not available: {why}")
    split_id = current_split(store, dataset)
    train = store.frame(
        "SELECT r.record_id, r.text, r.\"group\", s.component, s.leaks FROM store.splits s "
        "JOIN store.records r USING (record_id) WHERE s.split_id = ? AND s.split = 'train' "
        "AND r.origin <> 'augment' ORDER BY r.record_id", [split_id])
    leaking = train.filter(pl.col("leaks"))
    parents = train.filter(~pl.col("leaks"))
    if limit is not None:
        parents = parents.head(limit)
    if parents.height == 0:
        raise InputError(f"split {split_id} of {dataset!r} has no train rows to augment "
                         f"({leaking.height} train rows leak and are skipped); re-split with `curate split`")
    copies, counts = augment_texts(parents["text"].to_list(), per_record, specs, seed,
                                   keys=parents["record_id"].to_list(), progress=progress)
    copies = copies.with_columns(hash_texts(copies["text"]).alias("input_hash"),
                                 parents["record_id"].gather(copies["parent"]).alias("parent_id"),
                                 parents["group"].cast(pl.String).gather(copies["parent"]).alias("group"),
                                 parents["component"].gather(copies["parent"]).alias("component"))
    with store.transaction() as cur:
        cur.register("aug_copies", copies.select("input_hash"))
        existing = {r[0] for r in cur.execute(
            "SELECT DISTINCT input_hash FROM store.records WHERE dataset = ? AND input_hash IN "
            "(SELECT input_hash FROM aug_copies)", [dataset]).fetchall()}
        cur.unregister("aug_copies")
        dup_existing = copies["input_hash"].is_in(list(existing))
        kept = copies.filter(~dup_existing)
        dup_batch = kept.height
        kept = kept.unique(subset="input_hash", keep="first", maintain_order=True)
        dup_batch -= kept.height
        start = store.next_id(cur, "store.records", "record_id")
        kept = kept.with_columns(pl.Series("record_id", np.arange(start, start + kept.height, dtype=np.int64)))
        ts = now()
        cur.register("aug_new", kept)
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, "
                    "origin, parent_id, ingest_id, source_row, ingested_at) SELECT record_id, ?, NULL, text, "
                    "\"group\", NULL, input_hash, 'augment', parent_id, NULL, NULL, ? FROM aug_new", [dataset, ts])
        cur.execute("INSERT INTO store.augmentations SELECT record_id, parent_id, augmenter, "
                    "json_merge_patch(params::JSON, json_object('copy', copy, 'run_seed', ?::BIGINT)), seed, ? "
                    "FROM aug_new", [seed, ts])
        cur.execute("INSERT INTO store.splits (split_id, record_id, split, component, reason, leaks) "
                    "SELECT ?, record_id, 'train', component, 'augmented from ' || parent_id, false FROM aug_new",
                    [split_id])
        cur.unregister("aug_new")
    by_aug = kept.group_by("augmenter").len().sort("augmenter")
    result = {
        "dataset": dataset, "split_id": split_id, "parents": parents.height,
        "skipped_leaking_parents": leaking.height, "per_record": per_record,
        "augmenters": [n for n, _ in specs], "seed": seed, "made": counts["made"], "failed": counts["failed"],
        "unchanged": counts["unchanged"], "failures": counts["failures"],
        "dropped_duplicate_existing": int(dup_existing.sum()), "dropped_duplicate_in_run": dup_batch,
        "inserted": kept.height, "by_augmenter": dict(by_aug.iter_rows()),
        "first_record_id": int(kept["record_id"][0]) if kept.height else None,
    }
    log.info("augment %s: %d copies inserted (%d dropped as duplicates, %d failed)", dataset, kept.height,
             result["dropped_duplicate_existing"] + dup_batch, counts["failed"])
    return result


def augmented_copies(store: Store, dataset: str) -> pl.DataFrame:
    """The dataset's augmented records with their lineage (parent, augmenter, params, seed)."""
    store.dataset(dataset)
    return store.frame("SELECT r.record_id, r.parent_id, a.augmenter, a.params, a.seed, r.text, p.text AS parent_text "
                       "FROM store.records r JOIN store.augmentations a USING (record_id) "
                       "JOIN store.records p ON p.record_id = r.parent_id WHERE r.dataset = ? ORDER BY r.record_id",
                       [dataset])


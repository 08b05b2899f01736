"""Instruction datasets built with SQL inserts (schema 2), for the Label Studio review tests: the records of
`curate ingest --task instruction` without going through the ingest (text = the prompt, `messages`, `response`)."""

import json
from pathlib import Path

from curation.normalize import input_hash
from curation.store import Store, now

SEED = Path(__file__).resolve().parents[1] / "data" / "self-instruct-seed" / "seed_tasks.jsonl"

def seed_pairs(n: int) -> list[tuple[str, str]]:
    """(prompt, response) pairs from the bundled Self-Instruct seed tasks (Apache-2.0)."""
    out = []
    for line in SEED.read_text().splitlines():
        task = json.loads(line)
        inst = task["instances"][0]
        prompt = task["instruction"] + (f"\n\n{inst['input']}" if inst.get("input") else "")
        out.append((prompt, inst["output"]))
        if len(out) == n:
            break
    return out


def make_instruction_dataset(store: Store, name: str, pairs, system: str | None = None) -> list[int]:
    """An instruction dataset (task 'instruction', labels keep/drop) with one conversation per pair."""
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.datasets (name, labels, contract_version, settings, created_at, task) "
                    "VALUES (?, ['keep', 'drop'], 'test', NULL, ?, 'instruction') ON CONFLICT DO NOTHING",
                    [name, now()])
        start = store.next_id(cur, "store.records", "record_id")
        ids = []
        for i, (prompt, response) in enumerate(pairs):
            messages = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
            rid = start + i
            cur.execute('INSERT INTO store.records (record_id, dataset, source_id, text, "group", meta, input_hash, '
                        "origin, parent_id, ingest_id, source_row, ingested_at, messages, response, tokens) "
                        "VALUES (?, ?, ?, ?, NULL, NULL, ?, 'ingest', NULL, NULL, ?, ?, ?, ?, NULL)",
                        [rid, name, f"seed-{i}", prompt, input_hash(json.dumps(messages)), i + 1, now(),
                         json.dumps(messages), response])
            ids.append(rid)
    return ids


def select(store: Store, dataset: str, selection_id: str, record_ids, run_id: str | None = None) -> None:
    with store.transaction() as cur:
        for rank, rid in enumerate(record_ids):
            cur.execute("INSERT INTO store.selections (selection_id, dataset, round, run_id, record_id, strategy, "
                        "score, rank, created_at) VALUES (?, ?, 1, ?, ?, 'highest_loss', NULL, ?, ?)",
                        [selection_id, dataset, run_id, rid, rank, now()])


def response_losses(store: Store, run_id: str, dataset: str, losses: dict[int, float]) -> None:
    """What `curate score` writes for an SFT run: the mean token NLL of each response."""
    with store.transaction() as cur:
        cur.execute("INSERT INTO store.runs (run_id, dataset, status, task) VALUES (?, ?, 'finished', 'sft') "
                    "ON CONFLICT DO NOTHING", [run_id, dataset])
        for rid, loss in losses.items():
            cur.execute("INSERT INTO store.response_scores (run_id, record_id, loss, base_loss, tokens, scored_at) "
                        "VALUES (?, ?, ?, NULL, 10, ?)", [run_id, rid, loss, now()])

"""Instruction data: conversations (prompt → response) for fine-tuning LLMs, ingested under a contract.

Pure cores take rows (dicts) or conversations (lists of `{role, content}`) and return lists; `ingest_instructions`
is the store edge. Layouts, detected from the first rows when `fmt="auto"`:

- `chat`: `{"messages": [{"role", "content"}, ...]}` (the OpenAI fine-tuning format);
- `alpaca`: `{instruction, input, output}` → user = instruction (+ blank line + input), assistant = output;
- `sharegpt`: `{conversations: [{from, value}]}` with `from` human / gpt / system;
- `prompt-completion`: `{prompt, completion}`, end-of-text markers (`<|endoftext|>`, `</s>`, ...) stripped;
- `dolly`: `{instruction, context, response, category}` → user = instruction (+ blank line + context).

A record stores `text` = the prompt (`render_prompt`), `messages` (JSON), `response` (the last assistant turn),
`tokens` (the conversation's token count) and `input_hash` = `conversation_hash` (the normalised conversation).
The rules of `data_contracts/instruction_file.yaml` are checked by `check_conversation`; a row that breaks one goes
to the quarantine with file, row, field, rule and message. The ingest is one transaction, and always
`rows_read == accepted + quarantined`. Exact duplicate conversations are accepted and counted in `duplicates`, as
the classification ingest does (dedup and splits handle them); a repeated source id breaks `unique`.
"""

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from curation.contracts import instruction_contract
from curation.errors import InputError
from curation.ingest import FieldMap, IngestResult, json_lines, open_source, write_quarantine
from curation.ingest import detect_format as detect_file_format
from curation.normalize import normalise, normalise_series
from curation.store import Store, now

log = logging.getLogger(__name__)

FORMATS = ("chat", "alpaca", "sharegpt", "prompt-completion", "dolly")
ROLES = ("system", "user", "assistant")
END_MARKERS = ("<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|end|>", "<eos>",
               "<|eos|>")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
                  "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}
# the columns each flat layout reads (prompt, response, extra prompt part); --prompt/--response-field override them
_FLAT = {"alpaca": ("instruction", "output", "input"), "dolly": ("instruction", "response", "context"),
         "prompt-completion": ("prompt", "completion", None)}
DETECT_ROWS = 20
BATCH_ROWS = 10_000

CountTokens = Callable[[list[str]], list[int]]


@dataclass(frozen=True)
class InstructionFields:
    """Column overrides: `prompt`/`response` replace a flat layout's prompt and response columns (Alpaca
    instruction/output, Dolly instruction/response, prompt/completion); `system` adds a leading system turn from a
    column; `id`/`group` feed source_id/group; `exclude` columns are not stored at all."""

    prompt: str | None = None
    response: str | None = None
    system: str | None = None
    id: str | None = None
    group: str | None = None
    exclude: tuple[str, ...] = ()


class RowError(InputError):
    """A row that cannot become a conversation: `rule` (`row_shape` or `required`), `field`, and the message."""

    def __init__(self, rule: str, field: str | None, message: str):
        super().__init__(message)
        self.rule, self.field, self.message = rule, field, message


# -- layouts --------------------------------------------------------------------------------------------------

def _row_format(row: Any, fields: InstructionFields) -> str | None:
    if not isinstance(row, dict):
        return None
    keys = set(row)
    if "messages" in keys:
        return "chat"
    if "conversations" in keys:
        return "sharegpt"
    if {"prompt", "completion"} <= keys:
        return "prompt-completion"
    if {"instruction", "response"} <= keys or ({"instruction", "context"} <= keys and "output" not in keys):
        return "dolly"
    if {"instruction", "output"} <= keys:
        return "alpaca"
    if fields.prompt and fields.response and {fields.prompt, fields.response} <= keys:
        return "prompt-completion"
    return None


def detect_format(rows: Iterable[Any], fields: InstructionFields = InstructionFields()) -> str:
    """The layout of the first `DETECT_ROWS` rows, from their keys. Rows that fit no layout are skipped (they will
    be quarantined); rows that fit different layouts, or none that fits, raise InputError naming the keys seen."""
    found: dict[str, int] = {}
    seen: set[str] = set()
    for i, row in enumerate(rows, 1):
        if i > DETECT_ROWS:
            break
        if isinstance(row, dict):
            seen |= set(row)
        fmt = _row_format(row, fields)
        if fmt is not None:
            found.setdefault(fmt, i)
    if len(found) > 1:
        where = ", ".join(f"{f} (row {r})" for f, r in found.items())
        raise InputError(f"the first rows fit different layouts: {where}; pass --format {'|'.join(FORMATS)}")
    if not found:
        raise InputError(f"no instruction layout fits the columns {sorted(seen) or '(none)'}; expected one of: chat "
                         "{messages}, alpaca {instruction, input, output}, sharegpt {conversations}, "
                         "prompt-completion {prompt, completion}, dolly {instruction, context, response}; or name the "
                         "columns with --prompt-field/--response-field")
    return next(iter(found))


def _text(row: dict, key: str, *, required: bool) -> str | None:
    v = row.get(key)
    if v is None:
        if required:
            raise RowError("required", key, f"field `{key}` is missing or null; give every row a `{key}`")
        return None
    if not isinstance(v, str):
        raise RowError("row_shape", key, f"field `{key}` is a {type(v).__name__}, not a string")
    return v


def strip_end_markers(text: str) -> str:
    """`text` without trailing end-of-text markers (`<|endoftext|>`, `</s>`, ...) and the whitespace around them."""
    out = text.rstrip()
    while True:
        for m in END_MARKERS:
            if out.endswith(m):
                out = out[: -len(m)].rstrip()
                break
        else:
            return out


def _content(v: Any, field: str) -> str:
    """A turn's content: a string, or OpenAI's list of parts of which only text parts are allowed."""
    if isinstance(v, str):
        return v
    if v is None:
        return ""
    if isinstance(v, list) and all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                                   for p in v):
        return "".join(p["text"] for p in v)
    raise RowError("row_shape", field, f"`{field}` must be a string (or a list of text parts), not "
                                       f"{type(v).__name__}; only text conversations are supported")


def _as_list(v: Any, key: str) -> list:
    if isinstance(v, str):  # a CSV cell, or a JSON column stringified by the reader
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise RowError("row_shape", key, f"`{key}` is text that is not JSON; give a list of turns") from None
    if hasattr(v, "tolist"):
        v = v.tolist()
    if not isinstance(v, list):
        raise RowError("row_shape", key, f"`{key}` must be a list of turns, not {type(v).__name__}")
    return v


def to_messages(row: Any, fmt: str, fields: InstructionFields = InstructionFields()) -> list[dict]:
    """One source row as a conversation `[{role, content}, ...]` (roles as given; `check_conversation` judges
    them). Raises RowError (rule `row_shape` or `required`, with the field) when the row has not the layout's shape."""
    if not isinstance(row, dict):
        raise RowError("row_shape", None, f"a row must be an object with the {fmt} layout's fields, "
                                          f"not {type(row).__name__}")
    if fmt not in FORMATS:
        raise InputError(f"unknown instruction format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    system = _text(row, fields.system, required=False) if fields.system else None
    head = [{"role": "system", "content": system}] if system else []
    if fmt in ("chat", "sharegpt"):
        key = "messages" if fmt == "chat" else "conversations"
        if row.get(key) is None:
            raise RowError("required", key, f"field `{key}` is missing or null; give every row its turns")
        turns = _as_list(row[key], key)
        out = []
        for i, t in enumerate(turns):
            f = f"{key}[{i}]"
            if not isinstance(t, dict):
                raise RowError("row_shape", f, f"`{f}` must be an object {{role, content}}, not {type(t).__name__}")
            if fmt == "chat" or "from" not in t:
                role, content = t.get("role"), _content(t.get("content"), f + ".content")
            else:
                role = t.get("from")
                role = SHAREGPT_ROLES.get(role.strip().lower(), role) if isinstance(role, str) else role
                content = _content(t.get("value"), f + ".value")
            out.append({"role": role if isinstance(role, str) else str(role), "content": content})
        return head + out
    prompt_key, response_key, extra_key = _FLAT[fmt]
    prompt_key, response_key = fields.prompt or prompt_key, fields.response or response_key
    prompt = _text(row, prompt_key, required=True)
    response = _text(row, response_key, required=True)
    extra = _text(row, extra_key, required=False) if extra_key else None
    if extra and extra.strip():
        prompt = f"{prompt}\n\n{extra}"
    if fmt == "prompt-completion":
        prompt, response = strip_end_markers(prompt), strip_end_markers(response).lstrip()
    return head + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _used_keys(fmt: str, fields: InstructionFields) -> set[str]:
    if fmt in ("chat", "sharegpt"):
        keys = {"messages" if fmt == "chat" else "conversations"}
    else:
        p, r, x = _FLAT[fmt]
        keys = {fields.prompt or p, fields.response or r, x}
    return (keys | {fields.system, fields.id, fields.group} | set(fields.exclude)) - {None}


# -- the contract ---------------------------------------------------------------------------------------------

def check_conversation(messages: list[dict], max_tokens: int | None = None,
                       token_count: int | None = None) -> list[tuple[str, str | None, str]]:
    """The contract rules `messages` breaks, as (rule, field, message), in the contract's order: valid_roles,
    not_blank, alternating_turns, ends_with_assistant, valid_utf8, max_tokens (checked only when both `max_tokens`
    and `token_count` are given). Empty list: the conversation passes."""
    out: list[tuple[str, str | None, str]] = []

    def broke(rule: str, field: str | None, message: str) -> None:
        out.append((rule, field, message))

    bad_roles = [(i, m["role"]) for i, m in enumerate(messages) if m["role"] not in ROLES]
    if bad_roles:
        i, role = bad_roles[0]
        broke("valid_roles", f"messages[{i}].role", f"turn {i} has role {role!r}; roles must be one of "
              f"{', '.join(ROLES)}")
    if not messages:
        broke("not_blank", "messages", "the conversation has no turns; give a user and an assistant turn")
    blank = [i for i, m in enumerate(messages) if not m["content"].strip()]
    if blank:
        i = blank[0]
        broke("not_blank", f"messages[{i}].content", f"turn {i} ({messages[i]['role']}) is empty or only "
              "whitespace; fill it or drop the row")
    body = messages[1:] if messages and messages[0]["role"] == "system" else messages
    for i, m in enumerate(body):
        want = "user" if i % 2 == 0 else "assistant"
        if m["role"] != want and m["role"] in ROLES:
            j = i + len(messages) - len(body)
            broke("alternating_turns", f"messages[{j}].role", f"turn {j} is {m['role']!r} where {want!r} is "
                  "expected; after an optional leading system turn, turns alternate user, assistant")
            break
    if messages and messages[-1]["role"] != "assistant":
        broke("ends_with_assistant", f"messages[{len(messages) - 1}].role", f"the last turn is "
              f"{messages[-1]['role']!r}; a conversation must end with the assistant's response")
    for i, m in enumerate(messages):
        bad = _bad_char(m["content"])
        if bad is not None:
            what = "a NUL character" if bad[1] == "\x00" else f"a lone surrogate U+{ord(bad[1]):04X}"
            broke("valid_utf8", f"messages[{i}].content", f"turn {i} has {what} at character {bad[0]}; it is not "
                  "valid UTF-8 text, fix the source")
            break
    if max_tokens is not None and token_count is not None and token_count > max_tokens:
        broke("max_tokens", "messages", f"the conversation has {token_count} tokens, more than --max-tokens "
              f"{max_tokens}; shorten it or raise the limit")
    return out


def _bad_char(text: str) -> tuple[int, str] | None:
    if "\x00" in text:
        return text.index("\x00"), "\x00"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return e.start, text[e.start]
    return None


def render_prompt(messages: list[dict]) -> str:
    """Everything before the last assistant turn, plainly: a single user turn is its bare content; otherwise the
    turns as "System: …\\n\\nUser: …\\n\\nAssistant: …\\n\\nUser: …"."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    before = messages[:last]
    if len(before) == 1 and before[0]["role"] == "user":
        return before[0]["content"]
    return "\n\n".join(f"{str(m['role']).capitalize()}: {m['content']}" for m in before)


def response_of(messages: list[dict]) -> str | None:
    """The last assistant turn's content (None when there is none)."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "assistant"), None)


def _hash_normalised(roles: list[str], norms: list[str]) -> str:
    joined = "\x1e".join(f"{r}\x1f{n}" for r, n in zip(roles, norms))
    return hashlib.md5(joined.encode("utf-8")).hexdigest()[:16]


def conversation_hash(messages: list[dict]) -> str:
    """`input_hash` of a conversation: the first 16 hex digits of the MD5 of its turns joined as
    `role \\x1f normalise(content)`, turns separated by `\\x1e` (curation.normalize's normalisation per turn)."""
    return _hash_normalised([m["role"] for m in messages], [normalise(m["content"]) for m in messages])


def conversation_hashes(conversations: list[list[dict]]) -> list[str]:
    """`conversation_hash` of many conversations, normalising all turns in one vectorised pass."""
    flat = [m["content"] for c in conversations for m in c]
    norms = normalise_series(pl.Series("t", flat, dtype=pl.String)).to_list() if flat else []
    out, k = [], 0
    for c in conversations:
        out.append(_hash_normalised([m["role"] for m in c], norms[k:k + len(c)]))
        k += len(c)
    return out


# -- token counting -------------------------------------------------------------------------------------------

def whitespace_counter(conversations: list[str]) -> list[int]:
    """Tokens as whitespace-separated words of all turns. `conversations` are JSON lists of {role, content}."""
    return [sum(len(m["content"].split()) for m in json.loads(c)) for c in conversations]


def tokenizer_counter(tokenizer: Any) -> CountTokens:
    """A `count_tokens` from a HF tokenizer: each conversation (JSON list of {role, content}) through the
    tokenizer's chat template when it has one, else its plain rendering (prompt, blank line, response)."""
    template = bool(getattr(tokenizer, "chat_template", None))

    def count(conversations: list[str]) -> list[int]:
        convs = [json.loads(c) for c in conversations]
        if template:
            out = []
            for c in convs:
                ids = tokenizer.apply_chat_template(c, tokenize=True)
                if isinstance(ids, dict) or hasattr(ids, "keys"):
                    ids = ids["input_ids"]
                out.append(len(ids))
            return out
        texts = [f"{render_prompt(c)}\n\n{response_of(c) or ''}" for c in convs]
        return [len(ids) for ids in tokenizer(texts)["input_ids"]]

    count.__name__ = f"tokenizer:{getattr(tokenizer, 'name_or_path', type(tokenizer).__name__)}"
    return count


# -- reading --------------------------------------------------------------------------------------------------

@dataclass
class _Row:
    row: int
    obj: Any = None
    error: dict | None = None  # a reader rejection: {field, rule, message, raw}


def _is_json_array(path: Path) -> bool:
    with path.open("rb") as f:
        return path.suffix.lower() == ".json" and f.read(64).lstrip().startswith(b"[")


def _read_json(path: Path) -> Iterator[_Row]:
    """JSON lines, or a `.json` file holding one array of objects (Alpaca's and Dolly's releases)."""
    if _is_json_array(path):
        try:
            rows = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: not readable as a JSON array ({e}); fix the file or save it as JSON lines") \
                from None
        for i, obj in enumerate(rows, 1):
            yield _Row(i, obj)
        return
    for i, obj, error in json_lines(path):
        yield _Row(i, obj, error)


def _frame_rows(batches: Iterable[Any], csv: bool) -> Iterator[_Row]:
    """Rows of curation.ingest's batched readers (CSV, Parquet, HF). CSV rows are numbered by their order among
    accepted rows until the reader reports its rejects at the end, so a CSV is read whole and renumbered."""
    if not csv:
        for b in batches:
            for r, obj in zip(b.rows.to_list(), b.columns.to_dicts()):
                yield _Row(r, obj)
        return
    kept: list[tuple[int, dict]] = []
    rejected: list[dict] = []
    for b in batches:
        kept.extend(zip(b.rows.to_list(), b.columns.to_dicts()))
        rejected.extend(b.rejected)
    bad = np.array(sorted({r["row"] for r in rejected}), dtype=np.int64)
    all_rows = np.arange(1, len(kept) + len(bad) + 1, dtype=np.int64)
    good_rows = all_rows[~np.isin(all_rows, bad)]
    rows = [_Row(int(good_rows[k - 1]), obj) for k, obj in kept]
    rows += [_Row(r["row"], error={k: r[k] for k in ("field", "rule", "message", "raw")}) for r in rejected]
    yield from sorted(rows, key=lambda x: x.row)


def read_rows(source: str | Path | Any, *, file_format: str | None = None,
              delimiter: str | None = None) -> tuple[str, str, Iterator[_Row]]:
    """(name, file format, rows) of a JSONL/JSON/CSV/Parquet file, a HF datasets folder or a HF Dataset object."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        file_format = file_format or detect_file_format(path) if path.exists() else file_format
        if file_format == "jsonl" and path.exists() and path.is_file():
            if path.stat().st_size == 0:
                raise InputError(f"{path}: the file is empty (0 bytes); check that it was written completely")
            return str(path), "json" if _is_json_array(path) else "jsonl", _read_json(path)
    src = open_source(source, FieldMap(), fmt=file_format, delimiter=delimiter)
    return src.name, src.format, _frame_rows(src.batches, src.format == "csv")


# -- the edge -------------------------------------------------------------------------------------------------

@dataclass
class InstructionIngestResult(IngestResult):
    task: str = "instruction"
    layout: str = ""
    tokenizer: str = ""
    tokens: int = 0
    max_tokens: int | None = None


def dataset_task(store: Store, name: str) -> str | None:
    """The task of dataset `name`, or None when there is no such dataset."""
    return store.one("SELECT task FROM store.datasets WHERE name = ?", [name])


def ingest_instructions(store: Store, source: str | Path | Any, dataset: str, *, fmt: str = "auto",
                        fields: InstructionFields = InstructionFields(), max_tokens: int | None = None,
                        count_tokens: CountTokens | None = None, file_format: str | None = None,
                        delimiter: str | None = None,
                        progress: Callable[[int, int | None], None] | None = None) -> InstructionIngestResult:
    """Ingest an instruction file (or HF Dataset object) into instruction dataset `dataset` (created if new, with
    labels keep, drop). `fmt`: auto or one of FORMATS; `count_tokens` maps conversations (JSON lists of
    {role, content}) to token counts, default `whitespace_counter`; `progress(rows_done, None)`."""
    if fmt != "auto" and fmt not in FORMATS:
        raise InputError(f"unknown instruction format {fmt!r}; use auto or one of {', '.join(FORMATS)}")
    if max_tokens is not None and max_tokens < 1:
        raise InputError(f"--max-tokens {max_tokens}: give a positive number of tokens")
    contract = instruction_contract()
    counter = count_tokens or whitespace_counter
    name, file_format, rows = read_rows(source, file_format=file_format, delimiter=delimiter)
    result = InstructionIngestResult(dataset, name, file_format, contract_version=contract.tag, max_tokens=max_tokens,
                                     tokenizer=getattr(counter, "__name__", "custom").replace("_counter", ""))
    started = now()
    with store.transaction() as cur:
        result.labels = store.ensure_dataset(cur, dataset, None, contract.tag, task="instruction")
        ingest_id = store.next_id(cur, "store.ingests", "ingest_id")
        first_record = store.next_id(cur, "store.records", "record_id")
        result.ingest_id = ingest_id
        ids = _SeenIds(cur, dataset) if fields.id else None
        next_record = first_record
        for batch in _batches(rows, BATCH_ROWS):
            if not result.layout:
                result.layout = fmt if fmt != "auto" else detect_format([r.obj for r in batch if r.error is None],
                                                                       fields)
                _check_columns(name, batch, result.layout, fields)
            good, bad = _convert(batch, result.layout, fields, max_tokens, counter, ids)
            if bad:
                write_quarantine(cur, ingest_id, dataset, name, pl.DataFrame(bad, schema={
                    "row": pl.Int64, "field": pl.String, "rule": pl.String, "message": pl.String, "raw": pl.String}))
                for b in bad:
                    result.quarantined_by_rule[b["rule"]] = result.quarantined_by_rule.get(b["rule"], 0) + 1
            if good:
                _insert(cur, good, next_record, dataset, ingest_id, started)
                next_record += len(good)
                result.tokens += sum(g["tokens"] for g in good)
            result.accepted += len(good)
            result.quarantined += len(bad)
            result.rows_read += len(batch)
            if progress:
                progress(result.rows_read, None)
        result.layout = result.layout or (fmt if fmt != "auto" else "")
        result.duplicates = _count_duplicates(cur, dataset, first_record)
        cur.execute("INSERT INTO store.ingests (ingest_id, dataset, file, format, rows_read, accepted, quarantined, "
                    "duplicates, contract_version, started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [ingest_id, dataset, name, file_format, result.rows_read, result.accepted, result.quarantined,
                     result.duplicates, contract.tag, started, now()])
    assert result.rows_read == result.accepted + result.quarantined
    log.info("ingested %s (%s) into %s: %d read, %d accepted, %d quarantined", name, result.layout, dataset,
             result.rows_read, result.accepted, result.quarantined)
    return result


def _batches(rows: Iterator[_Row], size: int) -> Iterator[list[_Row]]:
    buf: list[_Row] = []
    for r in rows:
        buf.append(r)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _check_columns(name: str, batch: list[_Row], layout: str, fields: InstructionFields) -> None:
    """A named column (--prompt-field, --id-field, ...) that no row of the first batch has is a usage error."""
    keys: set[str] = set()
    for r in batch:
        if isinstance(r.obj, dict):
            keys |= set(r.obj)
    if not keys:
        return
    for col, opt in ((fields.prompt, "--prompt-field"), (fields.response, "--response-field"),
                     (fields.system, "--system-field"), (fields.id, "--id-field"), (fields.group, "--group-field")):
        if col and col not in keys:
            raise InputError(f"{name}: no column {col!r} for {opt} (columns: {', '.join(sorted(keys))})")
    if layout in ("chat", "sharegpt") and (fields.prompt or fields.response):
        raise InputError(f"{name}: --prompt-field/--response-field name the columns of flat layouts (alpaca, dolly, "
                         f"prompt-completion); a {layout} file keeps its turns in one column")


def _raw(obj: Any) -> str:
    """The row as JSON for the quarantine; escaped to ASCII when it holds text that is not valid UTF-8."""
    try:
        raw = json.dumps(obj, ensure_ascii=False, default=str)
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raw = json.dumps(obj, ensure_ascii=True, default=str)
    except (TypeError, ValueError):
        raw = ascii(obj)
    return raw[:20_000]


def _opt_str(row: dict, key: str | None) -> str | None:
    v = row.get(key) if key else None
    return None if v is None else v if isinstance(v, str) else json.dumps(v, default=str)


class _SeenIds:
    """Rule `unique` on source_id: an id seen earlier in this file or already in the dataset."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, dataset: str):
        self.cur, self.dataset, self.seen = cur, dataset, {}

    def flag(self, rows: list[tuple[int, str]]) -> dict[int, str]:
        """{row: message} for the (row, source_id) pairs that repeat an id; remembers the others."""
        ids = sorted({s for _, s in rows} - set(self.seen))
        if ids:
            for sid, rid in self.cur.execute(
                    "SELECT source_id, min(record_id) FROM store.records WHERE dataset = ? AND source_id IN "
                    "(SELECT unnest(?::TEXT[])) GROUP BY 1", [self.dataset, ids]).fetchall():
                self.seen[sid] = f"is already in dataset {self.dataset!r} as record {rid}"
        out = {}
        for row, sid in rows:
            if sid in self.seen:
                out[row] = f"source id {sid!r} {self.seen[sid]}; ids must be unique"
            else:
                self.seen[sid] = f"appears earlier in this file (row {row})"
        return out


def _convert(batch: list[_Row], layout: str, fields: InstructionFields, max_tokens: int | None,
             count_tokens: CountTokens, ids: _SeenIds | None) -> tuple[list[dict], list[dict]]:
    """Accepted records and quarantine rows of one batch."""
    bad: list[dict] = []
    ok: list[dict] = []
    for r in batch:
        if r.error is not None:
            bad.append({"row": r.row, **r.error})
            continue
        try:
            messages = to_messages(r.obj, layout, fields)
        except RowError as e:
            bad.append({"row": r.row, "field": e.field, "rule": e.rule, "message": e.message, "raw": _raw(r.obj)})
            continue
        broken = check_conversation(messages)
        if broken:
            bad.append(_violation(r, broken))
            continue
        ok.append({"row": r.row, "obj": r.obj, "messages": messages})
    if ok:
        convs = [json.dumps(o["messages"], ensure_ascii=False) for o in ok]
        counts = list(count_tokens(convs))
        if len(counts) != len(convs):
            raise InputError(f"count_tokens returned {len(counts)} counts for {len(convs)} conversations")
        for o, c, n in zip(ok, convs, counts):
            o["json"], o["tokens"] = c, int(n)
    good = []
    dup = ids.flag([(o["row"], s) for o in ok if (s := _opt_str(o["obj"], fields.id)) is not None]) if ids else {}
    for o in ok:
        if max_tokens is not None and o["tokens"] > max_tokens:  # the other rules passed above
            bad.append(_violation(_Row(o["row"], o["obj"]), check_conversation(o["messages"], max_tokens,
                                                                               o["tokens"])))
        elif o["row"] in dup:
            bad.append({"row": o["row"], "field": "source_id", "rule": "unique", "message": dup[o["row"]],
                        "raw": _raw(o["obj"])})
        else:
            good.append(o)
    used = _used_keys(layout, fields)
    for g in good:
        obj = g["obj"]
        rest = {k: v for k, v in obj.items() if k not in used}
        g["meta"] = json.dumps(rest, ensure_ascii=False, default=str) if rest else None
        g["source_id"], g["group"] = _opt_str(obj, fields.id), _opt_str(obj, fields.group)
    bad.sort(key=lambda b: b["row"])
    return good, bad


def _violation(r: _Row, broken: list[tuple[str, str | None, str]]) -> dict:
    rule, field, message = broken[0]
    if len(broken) > 1:
        message += f" (also breaks: {', '.join(dict.fromkeys(b[0] for b in broken[1:]))})"
    return {"row": r.row, "field": field, "rule": rule, "message": message, "raw": _raw(r.obj)}


def _insert(cur: duckdb.DuckDBPyConnection, good: list[dict], first_id: int, dataset: str, ingest_id: int,
            started: Any) -> None:
    convs = [g["messages"] for g in good]
    table = pa.table({
        "record_id": pa.array(range(first_id, first_id + len(good)), pa.int64()),
        "source_id": pa.array([g["source_id"] for g in good], pa.string()),
        "text": pa.array([render_prompt(c) for c in convs], pa.string()),
        "grp": pa.array([g["group"] for g in good], pa.string()),
        "meta": pa.array([g["meta"] for g in good], pa.string()),
        "input_hash": pa.array(conversation_hashes(convs), pa.string()),
        "row": pa.array([g["row"] for g in good], pa.int64()),
        "messages": pa.array([g["json"] for g in good], pa.string()),
        "response": pa.array([response_of(c) for c in convs], pa.string()),
        "tokens": pa.array([g["tokens"] for g in good], pa.int32()),
    })
    cur.register("_ibatch", table)
    try:
        cur.execute("INSERT INTO store.records (record_id, dataset, source_id, text, \"group\", meta, input_hash, "
                    "origin, parent_id, ingest_id, source_row, ingested_at, messages, response, tokens) "
                    "SELECT record_id, ?, source_id, text, grp, meta::JSON, input_hash, 'ingest', NULL, ?, row, ?, "
                    "messages::JSON, response, tokens FROM _ibatch", [dataset, ingest_id, started])
    finally:
        cur.unregister("_ibatch")


def _count_duplicates(cur: duckdb.DuckDBPyConnection, dataset: str, first_record: int) -> int:
    """New records whose conversation an earlier record of the dataset has (the classification ingest's count)."""
    return cur.execute(
        "SELECT count(*) - count(DISTINCT n.input_hash) FILTER (WHERE o.input_hash IS NULL) "
        "FROM (SELECT input_hash FROM store.records WHERE dataset = ? AND record_id >= ?) n "
        "LEFT JOIN (SELECT DISTINCT input_hash FROM store.records WHERE dataset = ? AND record_id < ?) o "
        "USING (input_hash)", [dataset, first_record, dataset, first_record]).fetchall()[0][0]

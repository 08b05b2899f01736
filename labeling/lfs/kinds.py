"""Labeling-function kinds: the classes, the helpers users declare them with, names and the LF set's version.

Kinds
Keyword and regex LFs read one text column, `field=`: `text` (default), or on instruction datasets `prompt` (the
same as `text`) or `response` (the latest accepted revision of the last assistant turn).

- `keyword_lf(name, words, label)`: fires when any word occurs. Default: case-insensitive, whole word. Defined as
  the Python regex `(?<!\\w)(?:w1|w2|...)(?!\\w)` with `re.IGNORECASE` (Unicode `\\w`, Python's case folding),
  so the compiled and the Python path agree by construction. `whole_word=False`: substring match.
- `regex_lf(name, pattern, label, flags=0, negate=False)`: fires when `re.search(pattern, text, flags)` finds a
  match (or, with `negate=True`, when it finds none). Python's `re` is the reference semantics.
- `sql_lf(name, expr, label)`: fires when the DuckDB boolean expression over the record's columns is true
  (NULL counts as false). Columns: record_id, source_id, text, "group", meta (JSON), input_hash, origin, parent_id,
  prompt, response (classification datasets: prompt = text, response NULL).
- `@labeling_function()`: a plain Python function of a row (`x.text`, `x.prompt`, `x.response`, `x.meta`,
  `x.group`, meta keys as attributes) returning a label (name or index) or `ABSTAIN`/None; with `label=` it returns a truthy value
  to fire.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from curation.errors import InputError
from curation.store import INSTRUCTION_LABELS  # noqa: F401 - re-exported: one label set, defined in curation

ABSTAIN = -1
ENGINES = ("auto", "sql", "python")
# the record columns an LF sees (SQL expressions and Python rows alike); the gold label is never among them
RECORD_COLUMNS = ("record_id", "source_id", "text", "group", "meta", "input_hash", "origin", "parent_id", "prompt",
                  "response")
# the text columns a keyword/regex LF can read (`field=`); `prompt` is `text` under its instruction-data name
TEXT_FIELDS = ("text", "prompt", "response")


class LFDefinitionError(InputError):
    """An LF that cannot be built, compiled or resolved against the dataset's labels."""


# -- LF kinds -------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class LF:
    """Base of every LF kind. `label` is a label name or a class index; None only for multi-label Python LFs."""

    name: str
    label: str | int | None
    declared_at: str | None = dataclasses.field(default=None, kw_only=True)  # "file:line"

    kind = "base"

    def definition(self) -> dict:
        """A JSON-able canonical definition; the LF set's version hashes these."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True, eq=False)
class RegexLF(LF):
    pattern: str = ""
    flags: int = 0
    negate: bool = False
    engine: str = "auto"
    keywords: tuple[str, ...] | None = None  # set for keyword LFs (kind 'keyword')
    case_sensitive: bool = False
    whole_word: bool = True
    field: str = "text"  # the column it reads: text | prompt | response
    # set for LFs from files that come from elsewhere (declarative uploads): on the Python path the regex runs in
    # a killable worker process, at most this many seconds per batch (labeling.lfs.guard); not in the definition
    timeout_s: float | None = None

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "keyword" if self.keywords is not None else "regex"

    @functools.cached_property
    def compiled(self) -> re.Pattern:
        return re.compile(self.pattern, self.flags)

    def fires(self, text: str | None) -> bool:
        if text is None:  # a record without this field (a response on a classification dataset): abstain
            return False
        return (self.compiled.search(text) is None) if self.negate else (self.compiled.search(text) is not None)

    def definition(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "label": self.label, "pattern": self.pattern,
                             "flags": int(self.flags), "negate": self.negate}
        if self.keywords is not None:
            d |= {"keywords": list(self.keywords), "case_sensitive": self.case_sensitive,
                  "whole_word": self.whole_word}
        if self.field != "text":  # only when set, so the versions of existing LF sets stay the same
            d["field"] = self.field
        return d


@dataclasses.dataclass(frozen=True, eq=False)
class SqlLF(LF):
    expr: str = ""

    kind = "sql"

    def definition(self) -> dict:
        return {"kind": "sql", "label": self.label, "expr": self.expr}


@dataclasses.dataclass(frozen=True, eq=False)
class PythonLF(LF):
    func: Callable[..., Any] | None = None
    resources: dict | None = None

    kind = "python"

    def __call__(self, x: Any) -> Any:
        return self.func(x, **(self.resources or {}))  # type: ignore[misc]

    def definition(self) -> dict:
        try:
            src = inspect.getsource(self.func)  # type: ignore[arg-type]
        except (OSError, TypeError):
            src = getattr(self.func, "__qualname__", repr(self.func))
        return {"kind": "python", "label": self.label, "source": src,
                "resources": json.loads(json.dumps(self.resources or {}, sort_keys=True, default=repr))}


def _caller(depth: int = 2) -> str | None:
    try:
        f = sys._getframe(depth)
        return f"{f.f_code.co_filename}:{f.f_lineno}"
    except ValueError:  # pragma: no cover
        return None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.:-]{0,127}", name):
        raise LFDefinitionError(f"LF name {name!r}: use a letter or '_' then letters, digits, '_', '.', ':', '-'")
    return name


def _check_engine(name: str, engine: str) -> str:
    if engine not in ENGINES:
        raise LFDefinitionError(f"LF {name!r}: engine {engine!r} unknown; valid: {', '.join(ENGINES)}")
    return engine


def _check_field(name: str, field: str) -> str:
    if field not in TEXT_FIELDS:
        raise LFDefinitionError(f"LF {name!r}: field {field!r} unknown; valid: {', '.join(TEXT_FIELDS)}")
    return field


def keyword_lf(name: str, keywords: str | Iterable[str], label: str | int, *, case_sensitive: bool = False,
               whole_word: bool = True, engine: str = "auto", field: str = "text") -> RegexLF:
    """Fires `label` when any keyword occurs in the text (`field="response"`: in the response).

    Whole word (default): the keyword is neither preceded nor followed by a word character (Python's Unicode
    `\\w`: letters, digits, '_'). Case-insensitive (default): Python's `re.IGNORECASE` (Unicode simple case
    folding, so 'K' also matches the Kelvin sign). `whole_word=False` is a substring match, like
    `word in text.lower()` for ASCII text.
    """
    words = (keywords,) if isinstance(keywords, str) else tuple(keywords)
    if not words or any(not isinstance(w, str) or not w for w in words):
        raise LFDefinitionError(f"keyword LF {name!r}: give one or more non-empty keywords, got {keywords!r}")
    body = "|".join(re.escape(w) for w in words)
    pattern = f"(?<!\\w)(?:{body})(?!\\w)" if whole_word else f"(?:{body})"
    return RegexLF(_check_name(name), label, pattern=pattern, flags=0 if case_sensitive else re.IGNORECASE,
                   engine=_check_engine(name, engine), keywords=words, case_sensitive=case_sensitive,
                   whole_word=whole_word, field=_check_field(name, field), declared_at=_caller())


def regex_lf(name: str, pattern: str, label: str | int, *, flags: int = 0, negate: bool = False,
             engine: str = "auto", field: str = "text") -> RegexLF:
    """Fires `label` when `re.search(pattern, text, flags)` matches (`negate=True`: when it does not).
    `field="response"` (or `"prompt"`) searches that column instead of `text`; a NULL field abstains."""
    try:
        re.compile(pattern, flags)
    except re.error as e:
        raise LFDefinitionError(f"regex LF {name!r}: pattern {pattern!r} does not compile: {e}") from None
    return RegexLF(_check_name(name), label, pattern=pattern, flags=int(flags), negate=negate,
                   engine=_check_engine(name, engine), field=_check_field(name, field), declared_at=_caller())


def sql_lf(name: str, expr: str, label: str | int) -> SqlLF:
    """Fires `label` where the DuckDB boolean expression `expr` over the record's columns is true."""
    if not isinstance(expr, str) or not expr.strip():
        raise LFDefinitionError(f"SQL LF {name!r}: give a DuckDB boolean expression, e.g. \"length(text) < 20\"")
    return SqlLF(_check_name(name), label, expr=expr.strip(), declared_at=_caller())


def labeling_function(name: str | None = None, *, label: str | int | None = None,
                      resources: dict | None = None) -> Callable[[Callable], PythonLF]:
    """Decorator for a plain Python LF, Snorkel-style.

    Without `label`: the function returns a label (name or index) or `ABSTAIN` (-1) / None.
    With `label`: the function returns a truthy value to fire that label, falsy to abstain.
    `resources` are passed as keyword arguments.
    """

    def wrap(func: Callable) -> PythonLF:
        code = getattr(func, "__code__", None)
        where = f"{code.co_filename}:{code.co_firstlineno}" if code else None
        return PythonLF(_check_name(name or func.__name__), label, func=func, resources=resources,
                        declared_at=where)

    return wrap


def check_names(lfs: Sequence[LF]) -> None:
    seen: dict[str, int] = {}
    for i, lf in enumerate(lfs):
        if lf.name in seen:
            raise LFDefinitionError(f"LF name {lf.name!r} is used twice (LFs #{seen[lf.name]} and #{i}); "
                                    "names must be unique")
        seen[lf.name] = i


def lf_set_version(lfs: Sequence[LF]) -> str:
    """Hash of the LF definitions in order: re-applying an unchanged set is a no-op."""
    payload = json.dumps([[lf.name, lf.definition()] for lf in lfs], sort_keys=True, default=str)
    return "lfs:" + hashlib.sha256(payload.encode()).hexdigest()[:16]


def resolve_label(lf_name: str, label: Any, labels: Sequence[str]) -> int:
    """A label name or index → the class index, or an error naming the LF and the valid labels."""
    if isinstance(label, (bool, np.bool_)):
        raise LFDefinitionError(f"LF {lf_name!r}: label {label!r} is a bool; valid: {list(labels)} or 0..{len(labels)-1}")
    if isinstance(label, (int, np.integer)):
        if 0 <= int(label) < len(labels):
            return int(label)
    elif isinstance(label, str) and label in labels:
        return list(labels).index(label)
    raise LFDefinitionError(f"LF {lf_name!r}: label {label!r} is not in the dataset's label set {list(labels)} "
                            f"(give a name or an index 0..{len(labels) - 1})")

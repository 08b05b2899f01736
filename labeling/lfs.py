"""Labeling functions: the kinds, the helpers users declare them with, the loader of a user's LF file, the DuckDB
compiler (with the RE2-vs-Python check) and the batched Python runner with per-LF fault counts.

Kinds
- `keyword_lf(name, words, label)`: fires when any word occurs. Default: case-insensitive, whole word. Defined as
  the Python regex `(?<!\\w)(?:w1|w2|...)(?!\\w)` with `re.IGNORECASE` (Unicode `\\w`, Python's case folding),
  so the compiled and the Python path agree by construction. `whole_word=False`: substring match.
- `regex_lf(name, pattern, label, flags=0, negate=False)`: fires when `re.search(pattern, text, flags)` finds a
  match (or, with `negate=True`, when it finds none). Python's `re` is the reference semantics.
- `sql_lf(name, expr, label)`: fires when the DuckDB boolean expression over the record's columns is true
  (NULL counts as false). Columns: record_id, source_id, text, "group", meta (JSON), input_hash, origin, parent_id.
- `@labeling_function()`: a plain Python function of a row (`x.text`, `x.meta`, `x.group`, meta keys as
  attributes) returning a label (name or index) or `ABSTAIN`/None; with `label=` it returns a truthy value
  to fire.

Keyword, regex and SQL LFs compile into ONE vectorised DuckDB query. A regex is translated from Python's parse
tree into RE2 syntax node by node: every single-character atom (literal, class, `.`, `\\d`, `\\w`, `\\s`, under any
flags) becomes the explicit set of code points Python's `re` matches (computed by running Python's own engine over
every code point), anchors get Python's meaning (`$` before a final newline), and constructs RE2 cannot express
faithfully (backreferences, lookaround other than one character at the pattern's edge, Unicode `\\b` inside a
pattern, possessive/atomic groups, counted repeats over 1000) are detected. Such an LF runs in Python
(`engine="auto"`, the default; the apply result says which and why) or is refused (`engine="sql"`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import inspect
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from curation.errors import CurateError, InputError

try:  # Python 3.11+
    import re._compiler as _RC
    import re._constants as _C
    import re._parser as _P
except ImportError:  # pragma: no cover
    import sre_compile as _RC  # type: ignore
    import sre_constants as _C  # type: ignore
    import sre_parse as _P  # type: ignore

log = logging.getLogger(__name__)

ABSTAIN = -1
ENGINES = ("auto", "sql", "python")
# the record columns an LF sees (SQL expressions and Python rows alike); the gold label is never among them
RECORD_COLUMNS = ("record_id", "source_id", "text", "group", "meta", "input_hash", "origin", "parent_id")


class LFDefinitionError(InputError):
    """An LF that cannot be built, compiled or resolved against the dataset's labels."""


class LFRuntimeError(CurateError):
    """A Python LF raised (or returned a bad value) on a record, and the run is not fault-tolerant."""

    exit_code = 1


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

    @property
    def kind(self) -> str:  # type: ignore[override]
        return "keyword" if self.keywords is not None else "regex"

    @functools.cached_property
    def compiled(self) -> re.Pattern:
        return re.compile(self.pattern, self.flags)

    def fires(self, text: str) -> bool:
        return (self.compiled.search(text) is None) if self.negate else (self.compiled.search(text) is not None)

    def definition(self) -> dict:
        d: dict[str, Any] = {"kind": self.kind, "label": self.label, "pattern": self.pattern,
                             "flags": int(self.flags), "negate": self.negate}
        if self.keywords is not None:
            d |= {"keywords": list(self.keywords), "case_sensitive": self.case_sensitive,
                  "whole_word": self.whole_word}
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


def keyword_lf(name: str, keywords: str | Iterable[str], label: str | int, *, case_sensitive: bool = False,
               whole_word: bool = True, engine: str = "auto") -> RegexLF:
    """Fires `label` when any keyword occurs in the text.

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
                   whole_word=whole_word, declared_at=_caller())


def regex_lf(name: str, pattern: str, label: str | int, *, flags: int = 0, negate: bool = False,
             engine: str = "auto") -> RegexLF:
    """Fires `label` when `re.search(pattern, text, flags)` matches (`negate=True`: when it does not)."""
    try:
        re.compile(pattern, flags)
    except re.error as e:
        raise LFDefinitionError(f"regex LF {name!r}: pattern {pattern!r} does not compile: {e}") from None
    return RegexLF(_check_name(name), label, pattern=pattern, flags=int(flags), negate=negate,
                   engine=_check_engine(name, engine), declared_at=_caller())


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


# -- loading a user's LF file --------------------------------------------------------------------------
_DECLARATIVE_KEYS = {
    "keyword": {"name", "kind", "label", "keywords", "case_sensitive", "whole_word", "engine"},
    "regex": {"name", "kind", "label", "pattern", "flags", "negate", "engine"},
    "sql": {"name", "kind", "label", "expr"},
}


def load_declarative(path: Path) -> list[LF]:
    """Keyword, regex and SQL LFs from YAML/JSON (no code runs: safe for files uploaded to the API).

    `lfs: [{name, kind: keyword|regex|sql, label, keywords | pattern (+ flags: [IGNORECASE, ...], negate) | expr}]`
    """
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise LFDefinitionError(f"{path}: not YAML/JSON: {e}") from None
    items = doc.get("lfs") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise LFDefinitionError(f"{path}: expected `lfs:` with a list of LFs (name, kind, label, ...)")
    lfs: list[LF] = []
    for i, item in enumerate(items):
        where = f"{path}, LF #{i} ({item.get('name', '?') if isinstance(item, dict) else item!r})"
        kind = item.get("kind") if isinstance(item, dict) else None
        if kind not in _DECLARATIVE_KEYS:
            raise LFDefinitionError(f"{where}: kind {kind!r} unknown; valid: {', '.join(_DECLARATIVE_KEYS)} "
                                    "(Python LFs need a .py file)")
        extra = set(item) - _DECLARATIVE_KEYS[kind]
        if extra or "name" not in item or "label" not in item:
            raise LFDefinitionError(f"{where}: needs name and label; unknown keys {sorted(extra)}; valid: "
                                    f"{sorted(_DECLARATIVE_KEYS[kind])}")
        opts = {k: v for k, v in item.items() if k not in ("name", "kind", "label")}
        if kind == "regex":
            names = opts.pop("flags", []) or []
            names = [names] if isinstance(names, str) else names
            bad = [f for f in names if not isinstance(getattr(re, str(f), None), re.RegexFlag)]
            if bad:
                raise LFDefinitionError(f"{where}: unknown regex flags {bad}; e.g. IGNORECASE, MULTILINE, DOTALL, "
                                        "ASCII")
            opts["flags"] = functools.reduce(lambda a, f: a | getattr(re, f), names, 0)
        make = {"keyword": keyword_lf, "regex": regex_lf, "sql": sql_lf}[kind]
        lf = make(item["name"], **{"label": item["label"], **opts})
        lfs.append(dataclasses.replace(lf, declared_at=f"{path}#lfs[{i}]"))
    check_names(lfs)
    return lfs


def load_lfs(path: str | Path) -> list[LF]:
    """The LFs a file declares. Python: its `LFS` list if it has one, else every module-level LF in order.
    YAML/JSON (`.yaml`, `.yml`, `.json`): keyword, regex and SQL LFs only, no code runs (`load_declarative`)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such LF file")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        return load_declarative(path)
    mod_name = f"_curate_lfs_{hashlib.md5(str(path.resolve()).encode()).hexdigest()[:10]}"
    spec = importlib.util.spec_from_file_location(mod_name, path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except CurateError:
        raise
    except Exception as e:
        raise LFDefinitionError(f"{path}: loading the LF file failed: {type(e).__name__}: {e}") from e
    finally:
        sys.modules.pop(mod_name, None)
    if hasattr(module, "LFS"):
        lfs = list(module.LFS)
        bad = [repr(x)[:60] for x in lfs if not isinstance(x, LF)]
        if bad:
            raise LFDefinitionError(f"{path}: LFS holds non-LF items: {', '.join(bad)}")
    else:
        lfs = [v for v in vars(module).values() if isinstance(v, LF)]
    if not lfs:
        raise LFDefinitionError(f"{path}: declares no labeling functions (use keyword_lf/regex_lf/sql_lf or "
                                "@labeling_function(), or list them in LFS)")
    check_names(lfs)
    return lfs


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


# -- Python regex → RE2 --------------------------------------------------------------------------------
class Untranslatable(Exception):
    """The regex means something RE2 cannot say the same way; `str(e)` says which construct."""


_SURROGATES = range(0xD800, 0xE000)


@functools.cache
def _all_chars() -> str:
    return "".join(chr(i) for i in range(0x110000) if i not in _SURROGATES)


_ATOMS = {_C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.IN}
_FLAG_MASK = re.IGNORECASE | re.ASCII | re.DOTALL | re.UNICODE


class _NodeKey:
    """Hashable wrapper so nodes (lists inside) can go through the cache; equality by repr."""

    def __init__(self, node: Any):
        self.node, self.r = node, repr(node)

    def __hash__(self) -> int:
        return hash(self.r)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _NodeKey) and other.r == self.r


def atom_set(node: Any, flags: int) -> frozenset[int]:
    """The exact set of code points Python's `re` matches with this single-character node under `flags`."""
    flags &= _FLAG_MASK
    if not flags & re.ASCII:
        flags |= re.UNICODE  # str patterns are Unicode unless re.ASCII
    return _atom_set_impl(_NodeKey(node), flags)


@functools.lru_cache(maxsize=8192)
def _atom_set_impl(key: _NodeKey, flags: int) -> frozenset[int]:
    op, av = key.node
    if op is _C.LITERAL and not flags & re.IGNORECASE:
        return frozenset([av])
    state = _P.State()
    state.flags = flags
    pat = _RC.compile(_P.SubPattern(state, [key.node]), flags)
    return frozenset(ord(c) for c in pat.findall(_all_chars()))


@functools.cache
def _word_set(flags: int) -> frozenset[int]:
    return atom_set((_C.IN, [(_C.CATEGORY, _C.CATEGORY_WORD)]), flags & re.ASCII)


_ALL = frozenset(i for i in range(0x110000) if i not in _SURROGATES)
_SAFE = set(map(ord, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))


def _cp(c: int) -> str:
    return chr(c) if c in _SAFE else f"\\x{{{c:X}}}"


def _ranges(cps: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for c in sorted(cps):
        if out and c == out[-1][1] + 1:
            out[-1] = (out[-1][0], c)
        elif out and out[-1][0] <= 0xD7FF and c == 0xE000 and out[-1][1] == 0xD7FF:
            out[-1] = (out[-1][0], c)  # surrogates cannot occur in UTF-8 text: bridge them
        else:
            out.append((c, c))
    return out


def re2_class(cps: frozenset[int]) -> str:
    """An RE2 character class matching exactly `cps` (surrogates aside, which UTF-8 text cannot hold)."""
    if not cps:
        return "[^\\x{0}-\\x{10FFFF}]"
    if len(cps) == 1:
        return _cp(next(iter(cps)))
    negate = len(cps) > len(_ALL) // 2
    items = (_ALL - cps) if negate else cps
    if not items:
        return "[\\x{0}-\\x{10FFFF}]"
    body = "".join(_cp(a) if a == b else f"{_cp(a)}-{_cp(b)}" for a, b in _ranges(items))
    return f"[^{body}]" if negate else f"[{body}]"


def _first_set(seq: Sequence, flags: int, last: bool = False) -> frozenset[int] | None:
    """Chars the sequence's first (or last) consumed char can be, when it surely consumes one; else None."""
    if not seq:
        return None
    op, av = seq[-1] if last else seq[0]
    if op in _ATOMS:
        return atom_set((op, av), flags)
    if op is _C.SUBPATTERN:
        _, add, dele, p = av
        return _first_set(p.data if hasattr(p, "data") else p, (flags | add) & ~dele, last)
    if op is _C.BRANCH:
        sets = [_first_set(alt.data if hasattr(alt, "data") else alt, flags, last) for alt in av[1]]
        if any(s is None for s in sets):
            return None
        return frozenset().union(*sets)  # type: ignore[arg-type]
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT) and av[0] >= 1:
        return _first_set(av[2].data if hasattr(av[2], "data") else av[2], flags, last)
    return None


def _seq(p: Any) -> list:
    return list(p.data) if hasattr(p, "data") else list(p)


def _tr_seq(seq: list, flags: int, lead: bool, trail: bool) -> str:
    out = []
    for i, node in enumerate(seq):
        out.append(_tr_node(node, seq, i, flags, lead and i == 0, trail and i == len(seq) - 1))
    return "".join(out)


def _tr_node(node: Any, seq: list, i: int, flags: int, lead: bool, trail: bool) -> str:
    op, av = node
    if op in _ATOMS:
        cps = atom_set(node, flags)
        ctx = getattr(_CTX, "rare", None)
        if ctx is not None and len(cps) <= _RARE_MAX:
            ascii_part = frozenset(c for c in cps if c < 128)
            if ascii_part and len(ascii_part) < len(cps):
                ctx.update(cps - ascii_part)
                return re2_class(ascii_part)
        return re2_class(cps)
    if op is _C.SUBPATTERN:
        _, add, dele, p = av
        return "(?:" + _tr_seq(_seq(p), (flags | add) & ~dele, lead, trail) + ")"
    if op is _C.BRANCH:
        return "(?:" + "|".join(_tr_seq(_seq(a), flags, lead, trail) for a in av[1]) + ")"
    if op in (_C.MAX_REPEAT, _C.MIN_REPEAT):
        lo, hi, item = av
        if lo > 1000 or (hi is not _C.MAXREPEAT and hi > 1000):
            raise Untranslatable(f"counted repetition {{{lo},{hi}}} over 1000 (RE2's limit)")
        body = "(?:" + _tr_seq(_seq(item), flags, False, False) + ")"
        if hi is _C.MAXREPEAT:
            q = "*" if lo == 0 else "+" if lo == 1 else f"{{{lo},}}"
        else:
            q = f"{{{lo}}}" if lo == hi else f"{{{lo},{hi}}}"
        return body + q  # lazy or greedy: the same answer to "is there a match?"
    if op is _C.AT:
        return _tr_at(av, seq, i, flags, lead, trail)
    if op in (_C.ASSERT, _C.ASSERT_NOT):
        direction, p = av
        inner = _seq(p)
        if len(inner) == 1 and inner[0][0] in _ATOMS:
            s = atom_set(inner[0], flags)
            if direction == -1 and lead:  # (?<=c)... / (?<!c)... at the pattern's start
                return re2_class(s) if op is _C.ASSERT else f"(?:\\A|{re2_class(_ALL - s)})"
            if direction == 1 and trail:  # ...(?=c) / ...(?!c) at the pattern's end
                return re2_class(s) if op is _C.ASSERT else f"(?:{re2_class(_ALL - s)}|\\z)"
        raise Untranslatable("lookaround (RE2 has none; only a one-character lookbehind at the start or "
                             "lookahead at the end can be rewritten)")
    if op in (_C.GROUPREF, getattr(_C, "GROUPREF_EXISTS", None)):
        raise Untranslatable("backreference (RE2 has none)")
    if op in (getattr(_C, "POSSESSIVE_REPEAT", None), getattr(_C, "ATOMIC_GROUP", None)):
        raise Untranslatable("possessive quantifier or atomic group (RE2 has none)")
    raise Untranslatable(f"construct {op} (no exact RE2 equivalent)")


def _tr_at(code: Any, seq: list, i: int, flags: int, lead: bool, trail: bool) -> str:
    if code is _C.AT_BEGINNING_STRING:
        return "\\A"
    if code is _C.AT_END_STRING:
        return "\\z"
    if code is _C.AT_BEGINNING:
        return "(?m:^)" if flags & re.MULTILINE else "\\A"
    if code is _C.AT_END:
        if flags & re.MULTILINE:
            return "(?m:$)"
        if trail:  # Python's `$` also matches before a final newline
            return "(?:\\x{A}?\\z)"
        raise Untranslatable("`$` before more pattern (Python's `$` also matches before a final newline)")
    if code in (_C.AT_BOUNDARY, _C.AT_NON_BOUNDARY):
        boundary = code is _C.AT_BOUNDARY
        if flags & re.ASCII:
            return "\\b" if boundary else "\\B"  # RE2's \b is the ASCII word boundary
        w = _word_set(flags)
        word, nonword = re2_class(w), re2_class(_ALL - w)
        if lead:
            nxt = _first_set(seq[i + 1:], flags)
            if nxt is not None and nxt <= w:
                return f"(?:\\A|{nonword})" if boundary else word
            if nxt is not None and not nxt & w:
                return word if boundary else f"(?:\\A|{nonword})"
        if trail:
            prev = _first_set(seq[:i], flags, last=True)
            if prev is not None and prev <= w:
                return f"(?:{nonword}|\\z)" if boundary else word
            if prev is not None and not prev & w:
                return word if boundary else f"(?:{nonword}|\\z)"
        raise Untranslatable("Unicode `\\b`/`\\B` inside the pattern (RE2's is ASCII-only; add re.ASCII, or "
                             "put it at the pattern's edge next to a definite character)")
    raise Untranslatable(f"anchor {code}")


_CTX = threading.local()
_RARE_MAX = 8  # classes this small with non-ASCII members are case-fold extras: 's' → [sSſ], 'k' → [kKK]


def _translate(pattern: str, flags: int) -> str:
    parsed = _P.parse(pattern, flags)
    return _tr_seq(_seq(parsed), parsed.state.flags, True, True)


@functools.lru_cache(maxsize=1024)
def translate_regex(pattern: str, flags: int = 0) -> str:
    """Python regex → an RE2 pattern with the same `re.search` answer on every text. Raises Untranslatable."""
    return _translate(pattern, flags)


@functools.lru_cache(maxsize=1024)
def translate_regex_fast(pattern: str, flags: int = 0) -> tuple[str, str, frozenset[int]]:
    """(full, ascii, rare): `ascii` drops the non-ASCII members (`rare`) of small classes such as [sSſ].

    RE2 scans 3-4× slower when a class mixes ASCII with multi-byte characters, so the compiled test is
    `ascii matches OR (text contains a rare char AND full matches)` — exact: a text holding none of the rare
    characters matches `full` exactly when it matches `ascii`, and `ascii` never matches more than `full`.
    """
    full = translate_regex(pattern, flags)
    _CTX.rare = set()
    try:
        fast = _translate(pattern, flags)
        rare = frozenset(_CTX.rare)
    finally:
        _CTX.rare = None
    return full, fast, rare


def check_regex(pattern: str, flags: int = 0) -> tuple[str | None, str | None]:
    """(re2_pattern, None) when it compiles to DuckDB faithfully, else (None, reason)."""
    try:
        return translate_regex(pattern, flags), None
    except Untranslatable as e:
        return None, str(e)


# -- compiling to one DuckDB query ----------------------------------------------------------------------
def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def regex_sql(pattern: str, flags: int = 0, column: str = "text") -> str:
    r"""The DuckDB boolean expression for `re.search(pattern, column, flags) is not None`. Raises Untranslatable.

    The empty text is decided in Python once (RE2 and Python disagree there, e.g. `\B` matches '' in RE2 only).
    """
    full, fast, rare = translate_regex_fast(pattern, flags)
    cond = f"regexp_matches({column}, {_sql_str(full)})"
    if rare:
        has_rare = " OR ".join(f"contains({column}, {_sql_str(chr(c))})" for c in sorted(rare))
        cond = f"(regexp_matches({column}, {_sql_str(fast)}) OR (({has_rare}) AND {cond}))"
    if re.search(pattern, "", flags) is not None:
        return f"({column} = '' OR {cond})"
    return f"({column} <> '' AND {cond})"


@dataclasses.dataclass
class Plan:
    """How each LF runs: `engines[j]` is 'sql' or 'python'; `reasons[j]` why a regex/keyword LF runs in Python."""

    lfs: list[LF]
    label_idx: list[int | None]
    engines: list[str]
    reasons: list[str | None]
    sql_exprs: dict[int, str]


def plan(lfs: Sequence[LF], labels: Sequence[str]) -> Plan:
    check_names(lfs)
    label_idx: list[int | None] = []
    engines, reasons, exprs = [], [], {}
    for j, lf in enumerate(lfs):
        label_idx.append(None if (isinstance(lf, PythonLF) and lf.label is None)
                         else resolve_label(lf.name, lf.label, labels))
        if isinstance(lf, SqlLF):
            engines.append("sql"), reasons.append(None)
            exprs[j] = f"CASE WHEN ({lf.expr}) THEN {label_idx[j]} ELSE -1 END"
        elif isinstance(lf, RegexLF):
            if lf.engine == "python":
                engines.append("python"), reasons.append("engine='python' requested")
                continue
            try:
                cond, why = regex_sql(lf.pattern, lf.flags), None
            except Untranslatable as e:
                cond, why = None, str(e)
            if cond is None:
                if lf.engine == "sql":
                    raise LFDefinitionError(f"LF {lf.name!r}: pattern {lf.pattern!r} cannot run in DuckDB with "
                                            f"Python's meaning: {why}. Use engine='auto' to run it in Python.")
                log.info("LF %s runs in Python: %s", lf.name, why)
                engines.append("python"), reasons.append(why)
                continue
            if lf.negate:
                cond = f"NOT {cond}"
            engines.append("sql"), reasons.append(None)
            exprs[j] = f"CASE WHEN {cond} THEN {label_idx[j]} ELSE -1 END"
        elif isinstance(lf, PythonLF):
            engines.append("python"), reasons.append(None)
        else:
            raise LFDefinitionError(f"LF {lf.name!r}: unknown kind {type(lf).__name__}")
    return Plan(list(lfs), label_idx, engines, reasons, exprs)


def check_sql_exprs(cur: Any, p: Plan, relation: str) -> None:
    """Each SQL LF must be one boolean expression that DuckDB binds over the record columns."""
    import duckdb

    for j, lf in enumerate(p.lfs):
        if not isinstance(lf, SqlLF):
            continue
        if re.search(r"\bselect\b", re.sub(r"'(?:[^']|'')*'", "''", lf.expr), re.IGNORECASE):
            raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} has a subquery; an SQL LF sees one record's "
                                    f"columns ({', '.join(RECORD_COLUMNS)}) and never other tables (gold labels)")
        try:
            stmts = duckdb.extract_statements(f"SELECT ({lf.expr}) AS x")
        except duckdb.Error as e:
            raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} must be one boolean expression; DuckDB's "
                                    f"parser says: {str(e).splitlines()[0]}") from None
        if len(stmts) != 1 or stmts[0].type != duckdb.StatementType.SELECT:
            raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} must be one boolean expression")
        try:
            cur.execute(f"SELECT ({lf.expr})::BOOLEAN FROM ({relation}) LIMIT 0").fetchall()
        except duckdb.Error as e:
            raise LFDefinitionError(f"SQL LF {lf.name!r}: {lf.expr!r} does not run over the records: "
                                    f"{str(e).splitlines()[0]}. Columns: {', '.join(RECORD_COLUMNS)}") from None


def compiled_query(p: Plan, relation: str) -> str:
    """One SELECT computing every SQL-engine LF's vote column (c0, c1, ...) per record, ordered by record_id."""
    cols = [f"{e}::SMALLINT AS c{j}" for j, e in p.sql_exprs.items()]
    return f"SELECT record_id, {', '.join(cols) or 'NULL AS none'} FROM ({relation}) ORDER BY record_id"


# -- Python rows ----------------------------------------------------------------------------------------
class Row:
    """What a Python LF sees: record columns as attributes; `meta` parsed; unknown attributes read meta keys."""

    __slots__ = ("_meta", "group", "input_hash", "origin", "parent_id", "record_id", "source_id", "text")

    def __init__(self, **cols: Any):
        for k in self.__slots__:
            object.__setattr__(self, k, cols.get(k.lstrip("_") if k == "_meta" else k))

    @property
    def meta(self) -> dict:
        m = self._meta
        if isinstance(m, str):
            m = json.loads(m)
            object.__setattr__(self, "_meta", m)
        return m or {}

    def __getattr__(self, key: str) -> Any:
        meta = self.meta
        if key in meta:
            return meta[key]
        raise AttributeError(f"record {self.record_id} has no field {key!r}; fields: "
                             f"{', '.join(c for c in RECORD_COLUMNS)}, meta keys: {', '.join(meta) or 'none'}")

    def __getitem__(self, key: str) -> Any:
        return getattr(self, "_meta" if key == "meta" else key) if key in RECORD_COLUMNS else self.meta[key]

    def __repr__(self) -> str:
        return f"Row(record_id={self.record_id}, text={self.text!r:.60})"


@dataclasses.dataclass
class MatrixResult:
    """The label matrix and how it was made. `L[i, j]` is LF j's vote on `record_ids[i]` (-1 = abstain)."""

    record_ids: np.ndarray
    L: np.ndarray
    names: list[str]
    engines: list[str]
    reasons: list[str | None]
    fired: list[int]
    faults: list[int]
    fault_examples: dict[str, str]
    seconds: dict[str, float]

    def lf_summary(self) -> list[dict]:
        return [{"lf": n, "engine": e, "fired": f, "faults": fa, **({"why_python": r} if r else {})}
                for n, e, r, f, fa in zip(self.names, self.engines, self.reasons, self.fired, self.faults)]


def _python_vote(lf: PythonLF, fixed: int | None, value: Any, labels: Sequence[str]) -> int:
    if fixed is not None:
        return fixed if value else ABSTAIN
    if value is None or (isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value == ABSTAIN):
        return ABSTAIN
    return resolve_label(lf.name, value, labels)


def run_python(lf: LF, fixed: int | None, rows: list[Row], labels: Sequence[str], *, fault_tolerant: bool,
               faults: list[int], j: int, examples: dict[str, str]) -> np.ndarray:
    """One LF over a batch of rows. A raise is counted (fault-tolerant) or stops the run naming LF and record."""
    out = np.full(len(rows), ABSTAIN, dtype=np.int16)
    is_regex = isinstance(lf, RegexLF)
    for i, x in enumerate(rows):
        try:
            if is_regex:
                out[i] = fixed if lf.fires(x.text) else ABSTAIN  # type: ignore[union-attr]
            else:
                out[i] = _python_vote(lf, fixed, lf(x), labels)  # type: ignore[operator]
        except Exception as e:
            msg = f"{type(e).__name__}: {e}"
            if not fault_tolerant:
                raise LFRuntimeError(f"LF {lf.name!r} failed on record {x.record_id} ({x.text!r:.80}): {msg}. "
                                     "Fix the LF, or pass --fault-tolerant to count such failures as "
                                     "abstains.") from e
            faults[j] += 1
            examples.setdefault(lf.name, f"record {x.record_id}: {msg}")
    return out


def label_matrix(con: Any, relation: str, lfs: Sequence[LF], labels: Sequence[str], *,
                 fault_tolerant: bool = False, batch_size: int = 20_000,
                 progress: Callable[[int], None] | None = None) -> MatrixResult:
    """Apply LFs to the records `relation` (a SELECT over RECORD_COLUMNS) on a DuckDB connection.

    SQL-engine LFs run as one vectorised query; the rest stream through Python in batches of `batch_size`.
    Returns the dense matrix (rows ordered by record_id, int16, -1 = abstain).
    """
    p = plan(lfs, labels)
    m = len(lfs)
    times: dict[str, float] = {}
    cur = con.cursor()
    try:
        check_sql_exprs(cur, p, relation)
        t0 = time.perf_counter()
        tbl = cur.sql(compiled_query(p, relation)).to_arrow_table()
        times["sql"] = time.perf_counter() - t0
        ids = tbl.column("record_id").to_numpy()
        n = len(ids)
        L = np.full((n, m), ABSTAIN, dtype=np.int16)
        for j in p.sql_exprs:
            L[:, j] = tbl.column(f"c{j}").to_numpy()
        del tbl
        py = [j for j, e in enumerate(p.engines) if e == "python"]
        faults, examples = [0] * m, {}
        if py:
            t0 = time.perf_counter()
            needs_rows = any(isinstance(lfs[j], PythonLF) for j in py)
            cols = ", ".join(f'"{c}"' for c in (RECORD_COLUMNS if needs_rows else ("record_id", "text")))
            reader = cur.sql(f"SELECT {cols} FROM ({relation}) ORDER BY record_id").to_arrow_reader(batch_size)
            start = 0
            for batch in reader:
                d = batch.to_pydict()
                k = batch.num_rows
                if needs_rows:
                    rows = [Row(**{c: d[c][i] for c in d}) for i in range(k)]
                else:
                    rows = [Row(record_id=r, text=t) for r, t in zip(d["record_id"], d["text"])]
                if not np.array_equal(np.asarray(d["record_id"]), ids[start:start + k]):
                    raise CurateError("records changed while the LFs ran; run again")
                for j in py:
                    L[start:start + k, j] = run_python(lfs[j], p.label_idx[j], rows, labels,
                                                       fault_tolerant=fault_tolerant, faults=faults, j=j,
                                                       examples=examples)
                start += k
                if progress:
                    progress(k)
            times["python"] = time.perf_counter() - t0
        elif progress:
            progress(n)
    finally:
        cur.close()
    fired = [int(np.count_nonzero(L[:, j] != ABSTAIN)) for j in range(m)]
    return MatrixResult(ids, L, [lf.name for lf in lfs], p.engines, p.reasons, fired, faults, examples, times)

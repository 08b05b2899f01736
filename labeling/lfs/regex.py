"""Python regex → RE2 with Python's meaning, so a regex LF can run inside DuckDB.

A regex is translated from Python's parse tree into RE2 syntax node by node: every single-character atom (literal,
class, `.`, `\\d`, `\\w`, `\\s`, under any flags) becomes the explicit set of code points Python's `re` matches
(computed by running Python's own engine over every code point), anchors get Python's meaning (`$` before a final
newline), and constructs RE2 cannot express faithfully (backreferences, lookaround other than one character at the
pattern's edge, Unicode `\\b` inside a pattern, possessive/atomic groups, counted repeats over 1000) raise
`Untranslatable`.
"""

from __future__ import annotations

import functools
import re
import threading
from collections.abc import Iterable, Sequence
from typing import Any

try:  # Python 3.11+
    import re._compiler as _RC
    import re._constants as _C
    import re._parser as _P
except ImportError:  # pragma: no cover
    import sre_compile as _RC  # type: ignore
    import sre_constants as _C  # type: ignore
    import sre_parse as _P  # type: ignore


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

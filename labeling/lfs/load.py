"""Loading a user's LF file: Python (runs the module) or declarative YAML/JSON (keyword, regex and SQL LFs; no code
runs, so it is safe for files uploaded to the API), or a built-in set by name (`builtin:instruction-quality`)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import re
import sys
from pathlib import Path

from curation.errors import CurateError, InputError
from labeling.lfs.kinds import LF, LFDefinitionError, RegexLF, check_names, keyword_lf, regex_lf, sql_lf

_DECLARATIVE_KEYS = {
    "keyword": {"name", "kind", "label", "keywords", "case_sensitive", "whole_word", "engine", "field"},
    "regex": {"name", "kind", "label", "pattern", "flags", "negate", "engine", "field"},
    "sql": {"name", "kind", "label", "expr"},
}


def _setting_default(name: str) -> object:
    from curation.settings import Settings

    return Settings.model_fields[name].default


MAX_DECLARATIVE_LFS = 1000  # LFs in one declarative file
MAX_PATTERN_CHARS = 10_000  # characters of one regex (or a keyword LF's alternation)


def load_declarative(path: Path, *, max_bytes: int | None = None, regex_timeout_s: float | None = None) -> list[LF]:
    """Keyword, regex and SQL LFs from YAML/JSON (no code runs: safe for files uploaded to the API).

    Such a file may come from anyone, so it is read with limits (`labeling.lfs.guard`): at most `max_bytes`
    (CURATE_LF_FILE_MAX_BYTES), no YAML aliases, bounded nesting, at most MAX_DECLARATIVE_LFS LFs and
    MAX_PATTERN_CHARS per pattern; its keyword/regex LFs that cannot run in DuckDB run in a killable worker
    process for at most `regex_timeout_s` per batch (CURATE_LF_REGEX_TIMEOUT_S), and its SQL LFs pass the
    parser-based rule of `curation.sql.check_expression` when applied.

    `lfs: [{name, kind: keyword|regex|sql, label, keywords | pattern (+ flags: [IGNORECASE, ...], negate) | expr}]`;
    keyword and regex LFs take `field: text|prompt|response` (default text).
    """
    from labeling.lfs.guard import safe_yaml

    max_bytes = int(max_bytes or _setting_default("lf_file_max_bytes"))  # type: ignore[call-overload]
    timeout_s = float(regex_timeout_s or _setting_default("lf_regex_timeout_s"))  # type: ignore[arg-type]
    size = path.stat().st_size
    if size > max_bytes:
        raise LFDefinitionError(f"{path}: {size:,} bytes, over the limit of {max_bytes:,} (CURATE_LF_FILE_MAX_BYTES)")
    try:
        text = path.read_bytes()[:max_bytes + 1].decode("utf-8")
    except UnicodeDecodeError as e:
        raise LFDefinitionError(f"{path}: not UTF-8 text ({e})") from None
    doc = safe_yaml(text, max_bytes=max_bytes, where=str(path))
    items = doc.get("lfs") if isinstance(doc, dict) else doc
    if not isinstance(items, list) or not items:
        raise LFDefinitionError(f"{path}: expected `lfs:` with a list of LFs (name, kind, label, ...)")
    if len(items) > MAX_DECLARATIVE_LFS:
        raise LFDefinitionError(f"{path}: {len(items):,} LFs; at most {MAX_DECLARATIVE_LFS} in one file")
    lfs: list[LF] = []
    for i, item in enumerate(items):
        where = f"{path}, LF #{i} ({item.get('name', '?') if isinstance(item, dict) else item!r})"
        kind = item.get("kind") if isinstance(item, dict) else None
        if not isinstance(kind, str) or kind not in _DECLARATIVE_KEYS:
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
            if not isinstance(names, list):
                raise LFDefinitionError(f"{where}: `flags` must be a list of names, e.g. [IGNORECASE]")
            bad = [f for f in names if not isinstance(getattr(re, str(f), None), re.RegexFlag)]
            if bad:
                raise LFDefinitionError(f"{where}: unknown regex flags {bad}; e.g. IGNORECASE, MULTILINE, DOTALL, "
                                        "ASCII")
            opts["flags"] = functools.reduce(lambda a, f: a | getattr(re, f), names, 0)
        make = {"keyword": keyword_lf, "regex": regex_lf, "sql": sql_lf}[kind]
        if kind == "regex" and not isinstance(opts.get("pattern"), str):
            raise LFDefinitionError(f"{where}: `pattern` must be a string")
        lf = make(item["name"], **{"label": item["label"], **opts})
        extra_opts = {}
        if isinstance(lf, RegexLF):
            if len(lf.pattern) > MAX_PATTERN_CHARS:
                raise LFDefinitionError(f"{where}: the pattern has {len(lf.pattern):,} characters; at most "
                                        f"{MAX_PATTERN_CHARS:,} (split it into several LFs)")
            extra_opts["timeout_s"] = timeout_s
        lfs.append(dataclasses.replace(lf, declared_at=f"{path}#lfs[{i}]", **extra_opts))
    check_names(lfs)
    return lfs


BUILTIN_PREFIX = "builtin:"


def load_lfs(path: str | Path, *, max_bytes: int | None = None, regex_timeout_s: float | None = None) -> list[LF]:
    """The LFs a file declares. Python: its `LFS` list if it has one, else every module-level LF in order.
    YAML/JSON (`.yaml`, `.yml`, `.json`): keyword, regex and SQL LFs only, no code runs (`load_declarative`).
    `builtin:NAME`: a set shipped with the product (`labeling.builtin.BUILTIN_SETS`)."""
    if str(path).startswith(BUILTIN_PREFIX):
        from labeling.builtin import builtin_lfs

        return builtin_lfs(str(path)[len(BUILTIN_PREFIX):])
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such LF file")
    if path.suffix.lower() in (".yaml", ".yml", ".json"):
        return load_declarative(path, max_bytes=max_bytes, regex_timeout_s=regex_timeout_s)
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

"""Labeling functions: the kinds (`kinds`), the Python-regex → RE2 translator (`regex`), loading a user's LF file
(`load`), and the planner, DuckDB compiler and batched Python runner that build the label matrix (`apply`)."""

from labeling.lfs.apply import (
    LFRuntimeError,
    MatrixResult,
    Plan,
    Row,
    check_sql_exprs,
    compiled_query,
    label_matrix,
    plan,
    regex_sql,
    run_python,
    with_text_fields,
)
from labeling.lfs.kinds import (
    ABSTAIN,
    ENGINES,
    INSTRUCTION_LABELS,
    LF,
    RECORD_COLUMNS,
    TEXT_FIELDS,
    LFDefinitionError,
    PythonLF,
    RegexLF,
    SqlLF,
    check_names,
    keyword_lf,
    labeling_function,
    lf_set_version,
    regex_lf,
    resolve_label,
    sql_lf,
)
from labeling.lfs.load import BUILTIN_PREFIX, load_declarative, load_lfs
from labeling.lfs.regex import (
    Untranslatable,
    atom_set,
    check_regex,
    re2_class,
    translate_regex,
    translate_regex_fast,
)

__all__ = [
    "ABSTAIN", "BUILTIN_PREFIX", "ENGINES", "INSTRUCTION_LABELS", "LF", "RECORD_COLUMNS", "TEXT_FIELDS", "LFDefinitionError", "LFRuntimeError", "MatrixResult", "Plan",
    "PythonLF", "RegexLF", "Row", "SqlLF", "Untranslatable", "atom_set", "check_names", "check_regex",
    "check_sql_exprs", "compiled_query", "keyword_lf", "label_matrix", "labeling_function", "lf_set_version",
    "load_declarative", "load_lfs", "plan", "re2_class", "regex_lf", "regex_sql", "resolve_label", "run_python",
    "sql_lf", "translate_regex", "translate_regex_fast", "with_text_fields",
]

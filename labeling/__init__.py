"""Labeling: labeling functions, label models, LF analysis (weak supervision), and the Label Studio loop."""

from labeling.lfs import ABSTAIN, LF, keyword_lf, labeling_function, regex_lf, sql_lf

__all__ = ["ABSTAIN", "LF", "keyword_lf", "labeling_function", "regex_lf", "sql_lf"]

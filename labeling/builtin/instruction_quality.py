"""`builtin:instruction-quality`: LFs that vote `drop` on defects of an instruction–response pair and `keep` on
clear signs of a complete answer, for the label model to turn into a quality probability (P(keep) = probs[0]).

Label set: `keep,drop` (`labeling.lfs.INSTRUCTION_LABELS`). Each LF reads `prompt` and/or `response` (the latest
accepted revision). Most compile to DuckDB (keyword/regex LFs with `field="response"`, SQL LFs built from the same
patterns); Python LFs only where SQL can't say it (n-gram repetition, overlap with the prompt, Luhn-checked card
numbers).

drop
- `response_empty`: no letter or digit at all ("", whitespace, "...").
- `response_too_short`: fewer than 4 words, no code or markup, where the prompt opens with a writing verb (write,
  explain, describe, compose...).
- `response_repeats_prompt`: the response is (nearly) the prompt again: 90% of its word 3-grams are in the prompt
  and it covers 80% of the prompt's (or the normalised texts are equal).
- `response_duplicate`: the same response (normalised, 30+ characters) as an earlier record of the dataset.
- `refusal`: refusal boilerplate ("As an AI language model", "I'm sorry, but I cannot", "I cannot assist with").
- `ngram_repetition`: heavy repetition: under 50% distinct word 3-grams (12+ words), a line repeated 3+ times, or one
  word 6+ times in a row.
- `truncated`: ends mid-sentence: an unclosed code fence, a dangling connective or comma at the end, or prose
  that has finished sentences before but whose last one has no terminal punctuation.
- `template_garbage`: leftover template or markup in the response (`{{ x }}`, `<|im_start|>`, `[INST]`,
  `### Response:`, unrendered `{input}`, HTML tags/entities when the prompt asks for no HTML).
- `prompt_template_garbage`: chat-template tokens or unrendered placeholders in the prompt.
- `pii_email`, `pii_phone`: an e-mail address / a phone number in the response.
- `pii_card_number`: a 13–19 digit card number that passes the Luhn check.

keep
- `complete_answer`: 3+ words, ends with terminal punctuation (or a closing bracket/quote/code fence), and none of
  the SQL-checkable defects above.
- `short_direct_answer`: 1–3 words answering a prompt that does not ask for writing (classification, QA), with no
  defect pattern.
"""

from __future__ import annotations

import itertools
import re

from labeling.lfs.apply import regex_sql
from labeling.lfs.kinds import LF, labeling_function, regex_lf, sql_lf

KEEP, DROP = "keep", "drop"

REFUSAL = (r"(?:as an ai(?: language)? model|as a (?:large )?language model|i(?:'|’| a)m (?:sorry|afraid),? but i "
           r"(?:can(?:'|’)?t|cannot|am unable|am not able)|i (?:cannot|can(?:'|’)t|am unable to|(?:'|’)m unable to) "
           r"(?:assist|help (?:you )?with (?:that|this)|comply|fulfill|provide|answer|do that)|i (?:must|have to) (?:decline|refuse)|"
           r"(?:that|this) (?:request )?(?:is|goes) against my (?:guidelines|programming|policy))")
TEMPLATE = (r"\{\{\s*[\w.]+\s*\}\}|<\|[a-z_]+\|>|\[/?INST\]|<</?SYS>>|(?:^|\n)[ \t]*#{2,}[ \t]*(?:Response|Instruction|Input|"
            r"Assistant|User)\s*:|\{(?:input|instruction|output|prompt|question|context|text|response|query)\}|"
            r"</?s>|<(?:start|end)_of_turn>")
HTML = r"</?(?:div|span|p|br|td|tr|table|li|ul|b|i|em|strong|a)(?:\s[^<>]*)?/?>|&(?:nbsp|amp|lt|gt|quot|#\d+);"
ASKS_HTML = r"html|markup|xml|tag|web ?page|css"
WRITING = (r"^\s*(?:please\s+)?(?:write|explain|describe|compose|draft|summari[sz]e|elaborate|discuss|tell me about)"
           r"\s")  # the prompt opens with a writing verb
EMAIL = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"
PHONE = (r"(?<!\d)(?:(?:\+|00)\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{3}[ .-])\d{3}[ .-]\d{4}(?!\d)|"
         r"(?<![\d+])\+\d{1,3}(?:[ .-]?\d){8,12}(?!\d)")
# truncation: a dangling comma/connective at the very end, or finished sentences before an unfinished last one
DANGLING = (r"(?:[,:(\[{–—-]|\s(?:and|or|but|nor|the|a|an|of|to|with|for|in|on|at|by|from|that|which|who|whose|"
            r"is|are|was|were|be|been|as|if|because|so|than|then|this|these|those|their|its|my|your|our|his|her|"
            r"such|into|about|when|while|where|also))\s*$")
CUT_PROSE = r"[^\W\d_]{2}[.!?][\"')\]]?\s+[A-Z][^\n]*[^\W\d_]\s*$"
TERMINAL = r"(?:[.!?。！？…)\]}\"'»”’`*]|```)\s*$"
NO_ALNUM = r"^[\W_]*$"


def _cond(pattern: str, column: str = "response", flags: int = re.IGNORECASE) -> str:
    return regex_sql(pattern, flags, column=column)


def _words_at_least(k: int, column: str = "response") -> str:
    return _cond(r"\S+" + r"\s+\S+" * (k - 1), column, 0)


def _odd_fences(column: str = "response") -> str:
    return f"((length({column}) - length(replace({column}, '```', ''))) // 3) % 2 = 1"


DUPLICATE_SQL = ("length(trim(response)) >= 30 AND row_number() OVER (PARTITION BY "
                 "lower(regexp_replace(trim(response), '\\s+', ' ', 'g')) ORDER BY record_id) > 1")
# SQL stand-ins, on the safe side, for the Python-only defects: the keep LFs abstain where they might hold
ECHO_LIKE = ("(lower(trim(response)) = lower(trim(prompt)) OR (length(trim(response)) >= 15 AND "
             "(starts_with(lower(prompt), lower(trim(response))) OR contains(lower(response), lower(trim(prompt))) "
             "OR (contains(lower(prompt), lower(trim(response))) AND length(trim(response)) >= "
             "0.5 * length(trim(prompt))))))")
REPEAT_LIKE = ("(len(regexp_split_to_array(lower(trim(response)), '\\W+')) >= 12 AND "
               "len(list_distinct(regexp_split_to_array(lower(trim(response)), '\\W+'))) < "
               "0.45 * len(regexp_split_to_array(lower(trim(response)), '\\W+')))")
CARD_LIKE = r"(?:\d[ -]?){12,18}\d"


def _no_defect_sql() -> str:
    """No defect: the keep LFs vote only where none of the drop LFs can fire (the SQL ones exactly, the Python ones
    through looser stand-ins), so a keep vote never meets a drop vote from this set."""
    return " AND ".join(f"NOT coalesce({c}, false)" for c in (
        _cond(NO_ALNUM, flags=0), _cond(REFUSAL), _cond(TEMPLATE, flags=0), _cond(HTML), _cond(EMAIL, flags=0),
        _cond(PHONE, flags=0), _cond(TEMPLATE, "prompt", 0), _truncated_sql(), _too_short_sql(), DUPLICATE_SQL, ECHO_LIKE,
        REPEAT_LIKE, _cond(CARD_LIKE, flags=0)))


def _too_short_sql() -> str:
    # code or markup answers ("<p>Hello!</p>") can be short and right
    return (f"NOT {_cond(NO_ALNUM, flags=0)} AND NOT {_words_at_least(4)} AND NOT {_cond(r'[<>{}=`;]', flags=0)} "
            f"AND {_cond(WRITING, 'prompt')}")


def _truncated_sql() -> str:
    return (f"NOT {_cond(NO_ALNUM, flags=0)} AND ({_odd_fences()} OR ({_words_at_least(4)} AND "
            f"({_cond(DANGLING)} OR {_cond(CUT_PROSE, flags=0)})))")


# -- Python LFs -------------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+")


def _trigrams(words: list[str]) -> list[tuple[str, ...]]:
    return [tuple(words[i:i + 3]) for i in range(len(words) - 2)]


@labeling_function(name="response_repeats_prompt", label=DROP)
def response_repeats_prompt(x) -> bool:
    r = _WORD.findall((x.response or "").lower())
    p = _WORD.findall((x.prompt or "").lower())
    if not r or not p:
        return False
    if r == p:
        return True
    rt, pt = _trigrams(r), set(_trigrams(p))
    if len(rt) < 3 or not pt:
        return False
    in_prompt = sum(g in pt for g in rt) / len(rt)
    covered = len(pt & set(rt)) / len(pt)
    return in_prompt >= 0.9 and covered >= 0.8


@labeling_function(name="ngram_repetition", label=DROP)
def ngram_repetition(x) -> bool:
    text = x.response or ""
    words = _WORD.findall(text.lower())
    if len(words) >= 12:
        grams = _trigrams(words)
        if len(set(grams)) / len(grams) < 0.5:
            return True
    run = 1
    for a, b in itertools.pairwise(words):
        run = run + 1 if a == b else 1
        if run >= 6:
            return True
    lines = [ln.strip().lower() for ln in text.splitlines() if len(ln.strip()) >= 10]
    return any(lines.count(ln) >= 3 for ln in set(lines))


_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")


def luhn_ok(digits: str) -> bool:
    """The Luhn checksum (ISO/IEC 7812) of a string of digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


@labeling_function(name="pii_card_number", label=DROP)
def pii_card_number(x) -> bool:
    for m in _CARD.finditer(x.response or ""):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and len(set(digits)) > 1 and luhn_ok(digits):
            return True
    return False


# -- the set --------------------------------------------------------------------------------------------
def instruction_quality_lfs() -> list[LF]:
    """The LFs of `builtin:instruction-quality`, in a fixed order (the set's version hashes them)."""
    not_empty = f"NOT {_cond(NO_ALNUM, flags=0)}"
    asks_writing = _cond(WRITING, "prompt")
    return [
        regex_lf("response_empty", NO_ALNUM, DROP, field="response"),
        sql_lf("response_too_short", _too_short_sql(), DROP),
        response_repeats_prompt,
        sql_lf("response_duplicate", DUPLICATE_SQL, DROP),
        regex_lf("refusal", REFUSAL, DROP, flags=re.IGNORECASE, field="response"),
        ngram_repetition,
        sql_lf("truncated", _truncated_sql(), DROP),
        sql_lf("template_garbage", f"{_cond(TEMPLATE, flags=0)} OR ({_cond(HTML)} AND NOT "
               f"{_cond(ASKS_HTML, 'prompt')})", DROP),
        regex_lf("prompt_template_garbage", TEMPLATE, DROP, field="prompt"),
        regex_lf("pii_email", EMAIL, DROP, field="response"),
        regex_lf("pii_phone", PHONE, DROP, field="response"),
        pii_card_number,
        sql_lf("complete_answer", f"{_words_at_least(3)} AND {_cond(TERMINAL, flags=0)} AND {_no_defect_sql()}",
               KEEP),
        sql_lf("short_direct_answer", f"{not_empty} AND NOT {_words_at_least(4)} AND NOT {asks_writing} AND "
               f"{_no_defect_sql()}", KEEP),
    ]


__all__ = ["instruction_quality_lfs", "luhn_ok"]

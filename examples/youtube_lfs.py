"""The Snorkel spam tutorial's 10 labeling functions, written as `curate` LFs (YouTube comments, labels ham/spam).

    curate lf apply --dataset youtube --lfs examples/youtube_lfs.py

Keyword LFs keep the tutorial's semantics: a case-insensitive substring test (`word in text.lower()`), so
"subscribe" also fires on "subscribers" (curate's default is whole-word: `whole_word=True`). The tutorial's spaCy
`has_person` LF becomes a name-list heuristic (no spaCy model offline); the two sentiment LFs use TextBlob's
pattern lexicon, which ships inside the `textblob` package and needs no download.
"""

import functools
import re

from labeling import keyword_lf, labeling_function, regex_lf

HAM, SPAM = "ham", "spam"

keyword_my = keyword_lf("keyword_my", ["my"], SPAM, whole_word=False)
keyword_subscribe = keyword_lf("keyword_subscribe", ["subscribe"], SPAM, whole_word=False)
keyword_link = keyword_lf("keyword_link", ["http"], SPAM, whole_word=False)
keyword_please = keyword_lf("keyword_please", ["please", "plz"], SPAM, whole_word=False)
keyword_song = keyword_lf("keyword_song", ["song"], HAM, whole_word=False)
regex_check_out = regex_lf("regex_check_out", r"check.*out", SPAM, flags=re.IGNORECASE)
# fewer than 5 whitespace-separated words, i.e. len(text.split()) < 5
short_comment = regex_lf("short_comment", r"(?:\S+\s+){4}\S", HAM, negate=True)

# people the comments on these five videos talk about (the tutorial used spaCy's PERSON entities)
_PEOPLE = re.compile(
    r"\b(psy|katy|perry|eminem|rihanna|shakira|lmfao|redfoo|sky\s?blu|justin|bieber|taylor|swift|gaga|"
    r"miley|beyonce|drake|jay[- ]?z|kanye|obama|michael|jackson|adele|selena|ariana|nicki|minaj|pitbull|"
    r"dr\.?\s?dre|snoop|rihana|john|david|james|chris|mike|bob|marshall|slim\s?shady)\b", re.IGNORECASE)


@labeling_function(label=HAM)
def has_person(x):
    """Ham comments mention specific people and are short (under 20 words)."""
    return len(x.text.split()) < 20 and _PEOPLE.search(x.text) is not None


@functools.lru_cache(maxsize=100_000)
def _sentiment(text: str) -> tuple[float, float]:
    try:
        from textblob import TextBlob
    except ImportError as e:  # pragma: no cover
        raise ImportError("the sentiment LFs need `pip install textblob` (its lexicon ships in the package)") from e
    s = TextBlob(text).sentiment
    return s.polarity, s.subjectivity


@labeling_function(label=HAM)
def textblob_polarity(x):
    return _sentiment(x.text)[0] > 0.9


@labeling_function(label=HAM)
def textblob_subjectivity(x):
    return _sentiment(x.text)[1] >= 0.5


LFS = [keyword_my, keyword_subscribe, keyword_link, keyword_please, keyword_song, regex_check_out,
       short_comment, has_person, textblob_polarity, textblob_subjectivity]

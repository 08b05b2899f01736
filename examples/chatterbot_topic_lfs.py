"""Keyword / regex LFs for data/chatterbot-topics (labels ai, coding, emotion, literature, tech_support, trivia).
Written for the active-learning experiment; matching is whole-word and case-insensitive.

    curate lf apply --dataset chatterbot_topics --lfs examples/chatterbot_topic_lfs.py
"""

import re

from labeling import keyword_lf, regex_lf

ai = keyword_lf("ai", ["robot", "robots", "artificial", "intelligence", "computer program", "machine",
                       "chatbot", "bot", "sentient", "conscious", "software"], "ai")
coding = keyword_lf("coding", ["python", "code", "function", "programming", "javascript", "algorithm",
                               "variable", "class", "loop", "sql", "java", "compile", "syntax", "list"], "coding")
emotion = keyword_lf("emotion", ["feel", "feelings", "emotion", "emotions", "angry", "sad", "happy", "love",
                                 "jealous", "bored", "afraid", "fear", "laugh", "cry", "lonely"], "emotion")
literature = keyword_lf("literature", ["book", "books", "novel", "author", "wrote", "poem", "poet", "read",
                                       "shakespeare", "story", "writer", "literature"], "literature")
tech = keyword_lf("tech_support", ["computer", "laptop", "printer", "wifi", "router", "password", "screen",
                                   "keyboard", "mouse", "restart", "driver", "drivers", "update", "install",
                                   "internet", "battery", "usb"], "tech_support")
trivia_q = regex_lf("trivia_question", r"^(?:who|what|which|when|where|in what|how many)\b.*\b(?:first|"
                    r"largest|president|capital|year|country|called|known as|name)\b", "trivia",
                    flags=re.IGNORECASE)

"""Lexical matching of requests against tool catalogs: tokens, light stemming and a
field-weighted BM25.

Identifiers are split into words (``send_email``, ``sendEmail``, ``send-email``),
stop words and request filler ("please", "could", "thanks") are dropped, and words are
reduced by a light suffix stemmer so that "invoices", "deleting" and "deleted" match
"invoice" and "delete". Each tool is a set of fields (name, description, parameter
names and descriptions, usage examples); a field's term counts are multiplied by its
weight before BM25 (term-frequency boosting, as in BM25F), so a word in the tool's name
counts more than one in a parameter description.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence

from sage_plugins.rag.text import BM25, STOPWORDS

#: words that make a request polite or personal but say nothing about the tool
REQUEST_WORDS = frozenset(
    {
        *("please", "kindly", "thanks", "thank", "help", "could", "would", "should"),
        *("shall", "may", "might", "me", "my", "mine", "our", "us", "we", "need"),
        *("needs", "want", "wants", "like", "now", "just", "some", "any", "all"),
        *("last", "week", "today", "tomorrow", "for"),
    }
)
#: field -> weight of its term counts (see the module doc)
FIELD_WEIGHTS: Mapping[str, float] = {
    "name": 3.0,
    "description": 2.0,
    "parameters": 1.0,
    "examples": 1.0,
}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_TOKEN = re.compile(r"[a-z0-9]+")
#: words no signal matches on: stop words and request filler
DROPPED_WORDS = STOPWORDS | REQUEST_WORDS


def split_identifier(name: str) -> str:
    """``"sendEmail_v2"`` -> ``"send email v2"``: an identifier as words."""
    return " ".join(_TOKEN.findall(_CAMEL.sub(" ", name).lower()))


def stem(word: str) -> str:
    """A light suffix stemmer (plural ``-s``/``-es``/``-ies``, ``-ing``, ``-ed``, a
    final ``-e``), enough for inflections of one word to meet; never shorter than 3."""
    w = word
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and w.endswith(("sses", "shes", "ches", "xes")):
        w = w[:-2]
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    if len(w) > 5 and w.endswith("ing"):
        w = w[:-3]
    elif len(w) > 4 and w.endswith("ed"):
        w = w[:-2]
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


def plain_words(text: str) -> list[str]:
    """The words of ``text`` that say something (split identifiers, lower case, no
    stop or request words), unstemmed and in order."""
    return [
        w
        for w in _TOKEN.findall(_CAMEL.sub(" ", text).lower())
        if w not in DROPPED_WORDS and len(w) > 1
    ]


def tool_terms(text: str) -> list[str]:
    """The terms BM25 matches: split identifiers, drop stop/request words, stem."""
    return [stem(w) for w in plain_words(text)]


def field_bm25(
    docs: Sequence[Mapping[str, str]],
    weights: Mapping[str, float] = FIELD_WEIGHTS,
) -> BM25:
    """A BM25 over tools given as ``{field: text}`` (fields not in ``weights`` count 1)."""
    counts = []
    for fields in docs:
        doc: dict[str, float] = {}
        for field, text in fields.items():
            w = weights.get(field, 1.0)
            for term, n in Counter(tool_terms(text)).items():
                doc[term] = doc.get(term, 0.0) + w * n
        counts.append(doc)
    return BM25.from_counts(counts, tokenize=tool_terms)

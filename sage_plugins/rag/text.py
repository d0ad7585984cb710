"""Text helpers of the RAG operators: words, sentences, token counts, BM25.

Token counts matter for budgets (prompt size, context compression). Two counters:

* ``approx`` (default, no dependencies): counts word pieces and punctuation marks,
  with long words counted as one token per 4 characters — close to what BPE
  tokenizers give for English prose (within ~15% on typical text), not exact;
* a ``tokenizer.json`` file (``tokenizer=PATH``, a model directory or the file), read
  with the ``tokenizers`` library: exact for that model.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache

from sage_core.common.errors import SageError

_WORD = re.compile(r"\w+", re.UNICODE)
_PIECE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
# a sentence ends at . ! ? (or a blank line) followed by space and a capital/digit/quote
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])|\n\s*\n")

#: words too common to carry meaning for BM25 and overlap scores
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "what",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "you",
        "your",
        "do",
        "does",
        "can",
    ]
)


class TokenizerError(SageError):
    """A token counter could not be built (missing file or library)."""


def words(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``."""
    return [w.lower() for w in _WORD.findall(text)]


def terms(text: str) -> list[str]:
    """Words without stopwords (what BM25 scores)."""
    return [w for w in words(text) if w not in STOPWORDS]


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (no empty ones), whitespace-trimmed, in order."""
    parts = _SENTENCE_END.split(text)
    return [" ".join(p.split()) for p in parts if p and p.strip()]


def approx_tokens(text: str) -> int:
    """Approximate BPE token count (see the module docstring)."""
    return sum(max(1, math.ceil(len(p) / 4)) for p in _PIECE.findall(text))


@lru_cache(maxsize=8)
def _hf_counter(path: str) -> Callable[[str], int]:
    file = os.path.join(path, "tokenizer.json") if os.path.isdir(path) else path
    if not os.path.isfile(file):
        raise TokenizerError(
            f"no tokenizer.json at {path!r}; give a model directory or the file"
        )
    try:
        from tokenizers import Tokenizer
    except ImportError as exc:
        raise TokenizerError(
            "counting tokens with a tokenizer.json needs the `tokenizers` package "
            "(pip install tokenizers), or use tokenizer='approx'"
        ) from exc
    tok = Tokenizer.from_file(file)
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def token_counter(tokenizer: str | None = None) -> Callable[[str], int]:
    """A function counting tokens: ``approx`` (None) or a ``tokenizer.json`` path."""
    if tokenizer in (None, "", "approx"):
        return approx_tokens
    return _hf_counter(os.path.abspath(os.path.expanduser(str(tokenizer))))


class BM25:
    """Okapi BM25 over a fixed list of texts (``k1``, ``b`` as usual).

    ``scores(query)`` returns one score per text (0 for no shared term).
    ``tokenize`` turns a text (and the query) into terms (default :func:`terms`);
    :meth:`from_counts` builds one from term counts (e.g. field-weighted ones).
    """

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.5,
        b: float = 0.75,
        tokenize: Callable[[str], list[str]] = terms,
    ):
        self._fit([Counter(tokenize(t)) for t in texts], k1, b, tokenize)

    @classmethod
    def from_counts(
        cls,
        docs: Sequence[Mapping[str, float]],
        *,
        tokenize: Callable[[str], list[str]] = terms,
        k1: float = 1.5,
        b: float = 0.75,
    ) -> BM25:
        """A BM25 over documents given as (possibly weighted) term counts."""
        self = cls.__new__(cls)
        self._fit([Counter(d) for d in docs], k1, b, tokenize)
        return self

    def _fit(
        self,
        docs: list[Counter[str]],
        k1: float,
        b: float,
        tokenize: Callable[[str], list[str]],
    ) -> None:
        self.k1, self.b, self.tokenize = k1, b, tokenize
        self.docs = docs
        self.lengths = [sum(d.values()) for d in self.docs]
        n = len(self.docs)
        self.avg = (sum(self.lengths) / n) if n else 0.0
        df: Counter[str] = Counter()
        for doc in self.docs:
            df.update(doc.keys())
        self.idf = {
            term: math.log(1 + (n - f + 0.5) / (f + 0.5)) for term, f in df.items()
        }

    def scores(self, query: str) -> list[float]:
        q = set(self.tokenize(query))
        out = []
        for doc, length in zip(self.docs, self.lengths, strict=True):
            score = 0.0
            norm = (
                self.k1 * (1 - self.b + self.b * length / self.avg) if self.avg else 0
            )
            for term in q & doc.keys():
                tf = doc[term]
                score += self.idf[term] * tf * (self.k1 + 1) / (tf + norm)
            out.append(score)
        return out

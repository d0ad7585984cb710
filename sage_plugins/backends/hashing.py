"""The ``hash`` backend: a deterministic feature-hashing embedder (lexical, not semantic).

Each text becomes a bag of lower-cased word unigrams and bigrams (and, optionally,
character trigrams); every feature is hashed (BLAKE2b, identical in every process and
run) to one of ``dim`` buckets with a sign, weighted ``1 + log(tf)``, and the vector is
L2-normalised. Texts sharing words get similar vectors; paraphrases with different
words do not — it has no notion of meaning. Use it offline, in tests, or as the
lexical baseline next to a real model; use ``sentence-transformers`` for semantics.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import ClassVar

import numpy as np

from sage_core.backends import BackendError, EmbeddingBackend, Vectors

_WORD = re.compile(r"\w+", re.UNICODE)


def features(text: str, char_ngrams: int = 0) -> Counter[str]:
    """The hashed features of ``text``: words, word bigrams, optional char n-grams."""
    words = [w.lower() for w in _WORD.findall(text)]
    counts: Counter[str] = Counter(f"w:{w}" for w in words)
    counts.update(f"b:{a} {b}" for a, b in itertools.pairwise(words))
    if char_ngrams:
        for word in words:
            padded = f"#{word}#"
            counts.update(
                f"c:{padded[i : i + char_ngrams]}"
                for i in range(max(1, len(padded) - char_ngrams + 1))
            )
    return counts


class HashEmbedding(EmbeddingBackend):
    """Feature-hashing embedder (see the module docstring for what it is and is not).

    Args:
        dim: vector length (number of hash buckets).
        char_ngrams: also hash character n-grams of this size (0: off); helps with
            inflections and typos.
        model: a name for logs and collection metadata.
    """

    capabilities: ClassVar[tuple[str, ...]] = ("embed",)

    def __init__(
        self, *, dim: int = 256, char_ngrams: int = 0, model: str = "hash"
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise BackendError(f"hash embedder: dim must be an int >= 2, got {dim!r}")
        if char_ngrams < 0:
            raise BackendError("hash embedder: char_ngrams must be >= 0")
        self._dim = dim
        self.char_ngrams = char_ngrams
        self.model = f"{model}-{dim}" + (f"-c{char_ngrams}" if char_ngrams else "")

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self._dim, (1.0 if value >> 63 else -1.0)

    def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise BackendError("embed() takes a list of texts, got one string")
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if not isinstance(text, str):
                raise BackendError(
                    f"hash embedder: text {row} is {type(text).__name__}, not str"
                )
            for feature, tf in features(text, self.char_ngrams).items():
                bucket, sign = self._bucket(feature)
                out[row, bucket] += sign * (1.0 + math.log(tf))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

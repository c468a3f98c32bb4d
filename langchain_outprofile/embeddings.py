"""Offline style embeddings: character n-grams hashed into a dense, L2-normalized vector.

Character n-grams see what a writer's style is made of: punctuation ("!!!", "..."),
casing ("YOU BETTER"), elongation ("sooo"), emoji, slang and spelling. Hashing needs no
vocabulary, no model file and no network, so the vectors are the same on every machine.
"""

from __future__ import annotations

import asyncio
import re

import mmh3
import numpy as np
from langchain_core.embeddings import Embeddings

__all__ = ["StyleEmbeddings"]

_RUNS_OF_SPACE = re.compile(r"\s\s+")


class StyleEmbeddings(Embeddings):
    """A LangChain ``Embeddings`` for writing style, with no download and no state.

    Args:
        dimension: length of each vector (number of hash buckets).
        ngram_range: smallest and largest character n-gram.

    Example:
        ```python
        from langchain_outprofile import StyleEmbeddings

        embedder = StyleEmbeddings()
        vectors = embedder.embed_documents(["sooo good!!!", "Very good."])
        len(vectors[0])  # 512
        ```
    """

    def __init__(self, dimension: int = 512, ngram_range: tuple[int, int] = (1, 4)) -> None:
        if not isinstance(dimension, int) or dimension < 8:
            raise ValueError(f"dimension must be an int >= 8; got {dimension!r}")
        low, high = ngram_range
        if not 1 <= low <= high:
            raise ValueError(
                f"ngram_range must be (low, high) with 1 <= low <= high; got {ngram_range!r}"
            )
        self.dimension = dimension
        self.ngram_range = (low, high)

    @property
    def fingerprint(self) -> str:
        """Name and shape of this embedder, recorded on the collection it writes to."""
        low, high = self.ngram_range
        return f"StyleEmbeddings/char{low}-{high}/dim{self.dimension}"

    def embed_array(self, texts: list[str]) -> np.ndarray:
        """Embed texts as a dense float32 array of shape (len(texts), dimension)."""
        rows = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for row, text in zip(rows, texts, strict=True):
            row[:] = np.bincount(self._buckets(text), minlength=self.dimension)
            norm = float(np.linalg.norm(row))
            if norm > 0:
                row /= norm
        return rows

    def _buckets(self, text: str) -> list[int]:
        """The hash bucket of every character n-gram of ``text`` (runs of white space count
        as one space). Signed 32-bit MurmurHash3 with seed 0 and ``abs(h) % dimension``:
        the same buckets as scikit-learn's ``HashingVectorizer(analyzer="char",
        alternate_sign=False)``, so vectors written by earlier releases still match."""
        folded = _RUNS_OF_SPACE.sub(" ", text)
        low, high = self.ngram_range
        length = len(folded)
        return [
            abs(mmh3.hash(folded[start : start + n], 0)) % self.dimension
            for n in range(low, min(high, length) + 1)
            for start in range(length - n + 1)
        ]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed a list of texts."""
        return [row.tolist() for row in self.embed_array(list(texts))]

    def embed_query(self, text: str) -> list[float]:
        """Embed one text."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Embed a list of texts without blocking the event loop."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Embed one text without blocking the event loop."""
        return await asyncio.to_thread(self.embed_query, text)

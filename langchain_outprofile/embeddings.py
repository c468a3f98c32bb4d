"""Offline style embeddings: character n-grams hashed into a dense, L2-normalized vector.

Character n-grams see what a writer's style is made of: punctuation ("!!!", "..."),
casing ("YOU BETTER"), elongation ("sooo"), emoji, slang and spelling. Hashing needs no
vocabulary, no model file and no network, so the vectors are the same on every machine.
"""

from __future__ import annotations

import asyncio

import numpy as np
from langchain_core.embeddings import Embeddings
from sklearn.feature_extraction.text import HashingVectorizer

__all__ = ["StyleEmbeddings"]


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
        self._vectorizer = HashingVectorizer(
            analyzer="char",
            ngram_range=self.ngram_range,
            lowercase=False,
            n_features=dimension,
            alternate_sign=False,
            norm="l2",
            dtype=np.float32,
        )

    @property
    def fingerprint(self) -> str:
        """Name and shape of this embedder, recorded on the collection it writes to."""
        low, high = self.ngram_range
        return f"StyleEmbeddings/char{low}-{high}/dim{self.dimension}"

    def embed_array(self, texts: list[str]) -> np.ndarray:
        """Embed texts as a dense float32 array of shape (len(texts), dimension)."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        matrix = self._vectorizer.transform(texts).toarray().astype(np.float32, copy=False)
        return np.asarray(matrix)

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

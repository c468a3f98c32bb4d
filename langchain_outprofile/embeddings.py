"""Offline style embeddings: character n-grams hashed into a dense, L2-normalized vector.

Character n-grams see what a writer's style is made of: punctuation ("!!!", "..."),
casing ("YOU BETTER"), elongation ("sooo"), emoji, slang and spelling. Hashing needs no
vocabulary, no model file and no network, so the vectors are the same on every machine.
"""

from __future__ import annotations

import asyncio
import re

import numpy as np
from langchain_core.embeddings import Embeddings

__all__ = ["StyleEmbeddings"]

_RUNS_OF_SPACE = re.compile(r"\s\s+")
_CHUNK_CHARS = 200_000
"""Characters of text hashed in one vectorized pass (bounds the temporary arrays)."""
_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)
_MASKS = np.array([0, 0xFF, 0xFFFF, 0xFFFFFF, 0xFFFFFFFF], dtype=np.uint32)
"""The bytes of a last, partial block: ``_MASKS[n]`` keeps the low ``n``."""


def murmur3_32(data: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """MurmurHash3 x86_32 (seed 0) of the byte strings ``data[s:s + n]``, as uint32, for
    keys of 1 to 16 bytes (a 4-character n-gram of UTF-8). ``data`` must run on for 16 zero
    bytes past its last key. Vectorized: every key is hashed at once, 4-byte block by block,
    each block read from the little-endian word starting at every byte of ``data``.

    Example:
        ```python
        data = np.frombuffer(b"abc" + bytes(16), dtype=np.uint8)
        murmur3_32(data, np.array([0]), np.array([3]))  # mmh3.hash(b"abc", 0) as uint32
        ```
    """
    wide = data.astype(np.uint32)
    words = wide[:-3] | wide[1:-2] << 8 | wide[2:-1] << 16 | wide[3:] << 24
    lengths = lengths.astype(np.int64)
    h = np.zeros(len(starts), dtype=np.uint32)
    for block in range(4):
        left = np.clip(lengths - 4 * block, 0, 4)
        if not left.any():
            break
        k = _scramble(words[starts + 4 * block] & _MASKS[left])
        h = np.where(left == 4, _rotl(h ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64), h)
        h = np.where((left > 0) & (left < 4), h ^ k, h)
    h ^= lengths.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h


def _scramble(k: np.ndarray) -> np.ndarray:
    return _rotl(k * _C1, 15) * _C2


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


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
        """Embed texts as a dense float32 array of shape (len(texts), dimension).

        Every character n-gram of every text goes to the bucket ``abs(h) % dimension``, h
        the signed 32-bit MurmurHash3 (seed 0) of its UTF-8 bytes: the same buckets as
        scikit-learn's ``HashingVectorizer(analyzer="char", alternate_sign=False)``, so
        vectors written by earlier releases still match. Runs of white space count as one
        space. The hashing is vectorized over all n-grams of up to :data:`_CHUNK_CHARS`
        characters of text at a time (:func:`murmur3_32`).
        """
        rows = np.zeros((len(texts), self.dimension), dtype=np.float32)
        start = 0
        while start < len(texts):
            end, size = start, 0
            while end < len(texts) and (end == start or size + len(texts[end]) <= _CHUNK_CHARS):
                size += len(texts[end])
                end += 1
            rows[start:end] = self._counts([_RUNS_OF_SPACE.sub(" ", t) for t in texts[start:end]])
            start = end
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        np.divide(rows, norms, out=rows, where=norms > 0)
        return rows

    def _counts(self, texts: list[str]) -> np.ndarray:
        """How many n-grams of each text fall in each bucket (texts already folded)."""
        codes = [np.frombuffer(t.encode("utf-32-le"), dtype=np.uint32) for t in texts]
        lengths = np.array([len(c) for c in codes], dtype=np.int64)
        points = np.concatenate(codes) if codes else np.zeros(0, dtype=np.uint32)
        owner = np.repeat(np.arange(len(texts)), lengths)
        first = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(texts) else lengths
        room = (first + lengths)[owner] - np.arange(len(points))  # characters left in the text
        width = 1 + (points >= 0x80) + (points >= 0x800) + (points >= 0x10000)
        offsets = np.concatenate(([0], np.cumsum(width)))
        data = np.frombuffer("".join(texts).encode("utf-8") + bytes(16), dtype=np.uint8)
        low, high = self.ngram_range
        keys, texts_of = [], []
        for n in range(low, high + 1):
            at = np.flatnonzero(room >= n)
            keys.append(murmur3_32(data, offsets[at], offsets[at + n] - offsets[at]))
            texts_of.append(owner[at])
        signed = np.concatenate(keys).view(np.int32).astype(np.int64)
        buckets = np.abs(signed) % self.dimension
        cells = np.concatenate(texts_of) * self.dimension + buckets
        counts = np.bincount(cells, minlength=len(texts) * self.dimension)
        return counts.reshape(len(texts), self.dimension)

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

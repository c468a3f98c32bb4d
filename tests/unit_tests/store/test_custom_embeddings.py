"""A caller's own ``Embeddings`` end to end: writes, reads, feedback, and reopening a store.

``WordHashEmbeddings`` is written here (not the package's ``StyleEmbeddings``): each word is
hashed into one of ``dimension`` buckets, plus one constant bucket so no vector is zero.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings
from langchain_core.runnables import RunnableLambda

from langchain_outprofile import (
    EmbeddingMismatchError,
    OutputProfileMemory,
    ReadOptions,
    StyleEmbeddings,
)
from tests.conftest import ManualClock

NOW = 1_800_000_000.0
REPO = Path(__file__).resolve().parents[2]
TEXTS = [
    "Short answer first, then bullets.",
    "No fluff: say what changed and why.",
    "Sign off with a dash and my initials.",
]


class WordHashEmbeddings(Embeddings):
    """Words hashed into ``dimension`` buckets (blake2b), L2-normalised; records its calls."""

    def __init__(self, dimension: int = 24) -> None:
        self.dimension = dimension
        self.documents: list[str] = []
        self.queries: list[str] = []

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.documents.extend(texts)
        return [self._vector(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        self.queries.append(text)
        return self._vector(text)

    def _vector(self, text: str) -> list[float]:
        counts = [0.0] * self.dimension
        counts[0] = 1.0
        for word in re.findall(r"\w+", text.lower()):
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            counts[1 + int.from_bytes(digest, "big") % (self.dimension - 1)] += 1.0
        norm = math.sqrt(sum(c * c for c in counts))
        return [c / norm for c in counts]


class OtherWordHashEmbeddings(WordHashEmbeddings):
    """Same dimension, another class: a different embedder as far as a store can tell."""


def _memory(path: Path, embeddings: Embeddings | None, **kwargs: Any) -> OutputProfileMemory:
    return OutputProfileMemory.from_path(
        path, embeddings=embeddings, collection_name="custom", clock=ManualClock(NOW), **kwargs
    )


def _fill(memory: OutputProfileMemory) -> str:
    """Add, add_many, a tracked output with feedback, and a second user; returns the run."""
    memory.add(TEXTS[0], user_id="ana", task="email", created_at=NOW - 300)
    memory.add_many(
        [
            {"text": TEXTS[1], "user_id": "ana", "signal": "endorsed", "created_at": NOW - 200},
            {"text": TEXTS[2], "user_id": "ana", "created_at": NOW - 100},
            {"text": "Bob writes long letters.", "user_id": "bob", "created_at": NOW - 100},
        ]
    )
    run = uuid.uuid4()
    tracked = memory.track(RunnableLambda(lambda q: f"Answer to {q}, told my way."))
    tracked.invoke("the memo", config={"configurable": {"user_id": "ana"}, "run_id": run})
    memory.feedback(run, "endorsed")
    return str(run)


def _stored(memory: OutputProfileMemory) -> tuple[Any, ...]:
    """Everything a refused open must leave alone: both users, the collection's settings,
    and the state rows (versions and saved selections)."""
    store = memory.store
    state = store.state._collection.get(include=["documents", "metadatas"])
    return (
        memory.export("ana"),
        memory.export("bob"),
        store.total(),
        dict(store._collection.metadata or {}),
        sorted(
            (id_, doc, sorted((meta or {}).items()))
            for id_, doc, meta in zip(
                state["ids"], state["documents"], state["metadatas"], strict=True
            )
        ),
    )


def test_a_custom_embedder_serves_writes_reads_and_feedback(tmp_path: Path) -> None:
    embedder = WordHashEmbeddings()
    memory = _memory(tmp_path / "store", embedder)
    run = _fill(memory)

    stored = memory.store.load("ana")
    texts = [e.text for e in stored.entries]
    assert texts == [*TEXTS, "Answer to the memo, told my way."]
    assert stored.vectors.shape == (4, 24)
    expected = np.asarray(WordHashEmbeddings().embed_documents(texts), dtype=np.float32)
    np.testing.assert_allclose(stored.vectors, expected, atol=1e-6)  # this embedder's vectors
    assert set(texts) <= set(embedder.documents)
    (tracked,) = [r for r in memory.export("ana") if r["run_id"] == run]
    assert tracked["signals"] == ["endorsed"]  # no longer pending

    embedder.queries.clear()  # opening the store probed the embedder's dimension
    block = memory.select("ana", max_tokens=400).text
    assert all(text in block for text in texts) and "Bob" not in block
    assert embedder.queries == []  # a query-free read embeds nothing
    by_query = memory.select("ana", relevance_weight=0.5, query="bullets first", max_tokens=400)
    assert embedder.queries == ["bullets first"]
    assert {e.text for e in by_query.entries} == set(texts)
    metadata = memory.store._collection.metadata or {}
    assert metadata["embedding"] == f"{__name__}.WordHashEmbeddings"
    assert metadata["dimension"] == 24


def test_reopening_with_the_same_embedder_gives_the_same_block(tmp_path: Path) -> None:
    path = tmp_path / "store"
    memory = _memory(path, WordHashEmbeddings())
    _fill(memory)
    block = memory.select("ana", max_tokens=400).text

    same_process = _memory(
        path, WordHashEmbeddings(), reads=ReadOptions(snapshot_ttl_s=0)
    )  # ranks anew
    assert same_process.select("ana", max_tokens=400).text == block
    script = textwrap.dedent(
        f"""
        import sys
        from langchain_outprofile import OutputProfileMemory, ReadOptions
        from tests.conftest import ManualClock
        from tests.unit_tests.store.test_custom_embeddings import NOW, WordHashEmbeddings
        memory = OutputProfileMemory.from_path(
            {str(path)!r}, embeddings=WordHashEmbeddings(), collection_name="custom",
            clock=ManualClock(NOW), reads=ReadOptions(snapshot_ttl_s=0),
        )
        sys.stdout.write(memory.select("ana", max_tokens=400).text)
        """
    )
    new_process = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
        timeout=300,
    )
    assert new_process.returncode == 0, new_process.stderr[-3000:]
    assert new_process.stdout == block


@pytest.mark.parametrize(
    ("other", "key"),
    [
        (WordHashEmbeddings(dimension=16), "dimension"),
        (OtherWordHashEmbeddings(), "embedding"),
        (None, "embedding"),  # the default StyleEmbeddings
        (StyleEmbeddings(dimension=24), "embedding"),
    ],
    ids=["other dimension", "other class", "default embedder", "style embedder, same size"],
)
def test_reopening_with_another_embedder_is_refused_and_changes_nothing(
    tmp_path: Path, other: Embeddings | None, key: str
) -> None:
    path = tmp_path / "store"
    memory = _memory(path, WordHashEmbeddings())
    _fill(memory)
    block = memory.select("ana", max_tokens=400).text
    before = _stored(memory)

    with pytest.raises(EmbeddingMismatchError) as refused:
        _memory(path, other)

    message = str(refused.value)
    assert f"collection 'custom' was written with {key}=" in message
    assert "open it with the embedder it was written with, or use another collection_name" in (
        message
    )
    assert _stored(memory) == before
    reopened = _memory(path, WordHashEmbeddings())
    assert _stored(reopened) == before
    assert reopened.select("ana", max_tokens=400).text == block

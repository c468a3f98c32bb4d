"""StyleEmbeddings: LangChain's standard embedding suites plus style-specific checks."""

from __future__ import annotations

import mmh3
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests
from sklearn.feature_extraction.text import HashingVectorizer  # the reference (dev extra)

from langchain_outprofile import StyleEmbeddings
from langchain_outprofile.embeddings import murmur3_32


class TestStyleEmbeddingsUnit(EmbeddingsUnitTests):
    @property
    def embeddings_class(self) -> type[StyleEmbeddings]:
        return StyleEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"dimension": 256}


class TestStyleEmbeddingsIntegration(EmbeddingsIntegrationTests):
    @property
    def embeddings_class(self) -> type[StyleEmbeddings]:
        return StyleEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, object]:
        return {"dimension": 256}


def test_vectors_are_dense_normalized_and_deterministic() -> None:
    embedder = StyleEmbeddings()
    first = np.array(embedder.embed_documents(["sooo good!!!", "Very good."]))
    again = np.array(StyleEmbeddings().embed_documents(["sooo good!!!", "Very good."]))
    assert first.shape == (2, 512)
    assert np.allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(first, again)


def test_style_not_topic_drives_similarity() -> None:
    embedder = StyleEmbeddings()
    shouty_a, shouty_b, calm = embedder.embed_array(
        ["OMG!!! SO GOOD!!! 😍😍", "LOL!!! SO FUNNY!!! 😂😂", "The results were satisfactory."]
    )
    assert float(shouty_a @ shouty_b) > float(shouty_a @ calm)


def test_casing_is_a_feature() -> None:
    embedder = StyleEmbeddings()
    lower, upper = embedder.embed_array(["you better not", "YOU BETTER NOT"])
    assert float(lower @ upper) < 0.5


async def test_async_matches_sync() -> None:
    embedder = StyleEmbeddings(dimension=64)
    assert await embedder.aembed_query("hi!!") == embedder.embed_query("hi!!")


@pytest.mark.parametrize("kwargs", [{"dimension": 4}, {"ngram_range": (3, 2)}])
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        StyleEmbeddings(**kwargs)  # type: ignore[arg-type]


def test_vectors_match_scikit_learns_hashing_vectorizer() -> None:
    """Collections written by earlier releases (which embedded with scikit-learn) keep
    their fingerprint: the vectors must stay the same, bucket for bucket."""
    texts = ["OMG the new album!!! 🔥🔥  sooo   good\n\tyes", "a", "ñandú über straße", "x" * 300]
    reference = HashingVectorizer(
        analyzer="char",
        ngram_range=(1, 4),
        lowercase=False,
        n_features=512,
        alternate_sign=False,
        norm="l2",
        dtype=np.float32,
    )
    expected = reference.transform(texts).toarray()
    assert np.allclose(StyleEmbeddings().embed_array(texts), expected, atol=1e-6)


@given(st.lists(st.binary(min_size=1, max_size=16), min_size=1, max_size=50))
def test_vectorized_murmur3_matches_mmh3(keys: list[bytes]) -> None:
    data = np.frombuffer(b"".join(keys) + bytes(16), dtype=np.uint8)
    lengths = np.array([len(k) for k in keys])
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
    expected = np.array([mmh3.hash(k, 0, signed=False) for k in keys], dtype=np.uint32)
    assert murmur3_32(data, starts, lengths).tolist() == expected.tolist()


def test_a_batch_embeds_each_text_as_alone() -> None:
    """Texts hashed in one vectorized pass do not leak n-grams into each other."""
    embedder = StyleEmbeddings()
    texts = ["sooo good!!!", "", "Very good.", "漢字 🙂 ok", " a  b "]
    together = embedder.embed_array(texts)
    alone = np.vstack([embedder.embed_array([t]) for t in texts])
    assert np.array_equal(together, alone)
    assert not together[1].any()

"""Token counting: the model's encoding, the offline fallback, and the approximate last resort."""

from __future__ import annotations

import warnings

import pytest
import tiktoken

from langchain_outprofile import tokens
from langchain_outprofile.tokens import ApproximateTokenizerWarning, TokenCounter, encoding_name_for


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-5.9-future", "o200k_base"),
        ("my-local-llama", "cl100k_base"),
    ],
)
def test_model_names_map_to_encodings(model: str, encoding: str) -> None:
    assert encoding_name_for(model) == encoding


def test_counts_match_the_encoding_in_use() -> None:
    counter = TokenCounter("gpt-4")
    text = "Short answer first, then bullets. No fluff! 😀"
    reference = tiktoken.get_encoding(counter.encoding_name)
    assert counter.exact
    assert counter.count(text) == len(reference.encode_ordinary(text))


def test_unloadable_encoding_falls_back_once_with_a_warning() -> None:
    tokens._encoder_for.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = TokenCounter(encoding="no_such_encoding")
        second = TokenCounter(encoding="no_such_encoding")
    fallback = [w for w in caught if issubclass(w.category, ApproximateTokenizerWarning)]
    assert len(fallback) == 1
    assert first.encoding_name == second.encoding_name == tokens.OFFLINE_ENCODING
    assert first.count("hello world") == 2


def test_without_any_table_counts_are_approximate_never_a_crash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens._encoder_for.cache_clear()
    monkeypatch.setattr(tokens, "OFFLINE_ENCODING", "also_missing")
    with pytest.warns(ApproximateTokenizerWarning, match="approximate"):
        counter = TokenCounter(encoding="still_missing")
    tokens._encoder_for.cache_clear()
    assert not counter.exact
    assert counter.count("abcdef") == 2
    assert counter.count("héllo") >= 2

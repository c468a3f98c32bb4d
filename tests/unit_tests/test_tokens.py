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


def test_memo_is_bounded_by_characters_and_counts_stay_exact() -> None:
    """Many long distinct texts: the memo keeps at most ``memo_chars`` characters of text in
    all (not a number of texts), and every count, memoized or evicted, stays exact."""
    counter = TokenCounter(encoding=tokens.OFFLINE_ENCODING)
    counter.memo_chars = 8_000  # texts up to 80 characters are memoized
    reference = tiktoken.get_encoding(tokens.OFFLINE_ENCODING)
    filler = "long distinct text, sentence after sentence. " * 2
    texts = [f"{i:05d} {filler}"[:80] for i in range(2_000)]  # 20x the bound in all
    assert {len(t) for t in texts} == {80}
    for _ in range(2):  # the second pass counts texts that were evicted in the first
        for text in texts:
            assert counter.count(text) == len(reference.encode_ordinary(text))
            assert sum(map(len, counter._memo)) <= counter.memo_chars
    assert len(counter._memo) == counter.memo_chars // 80  # it still memoizes, up to the bound
    assert counter._memo_chars == sum(map(len, counter._memo))
    last = texts[-1]
    assert counter._memo[last] == len(reference.encode_ordinary(last))
    too_long = "x" * (counter.memo_chars // 100 + 1)  # one text may not take over the memo
    counter.count(too_long)
    assert too_long not in counter._memo

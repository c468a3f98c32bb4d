"""Local, compiled runtime: the embedded model run by llama-cpp-python's ``ChatLlamaCpp``.

The ``llama-cpp`` extra installs ``llama-cpp-python`` (which compiles llama.cpp on install)
and ``langchain-community``, whose ``ChatLlamaCpp`` this module wraps with a lock. The default
runtime, which needs no compiler, is :mod:`langchain_outprofile.gguf_chat` (cyllama);
:func:`~langchain_outprofile.local.local_chat_model` chooses between them.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import AsyncIterator, Generator
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langchain_outprofile.errors import LocalModelUnavailableError
from langchain_outprofile.gguf_chat import ContextGuard, stream_in_one_thread
from langchain_outprofile.model_file import COMPILED_HINT

try:
    with warnings.catch_warnings():
        # langchain-community prints a sunset notice on its first import; it is not
        # actionable here. This module does not import llama_cpp (ChatLlamaCpp's validator
        # does, on use).
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_community.chat_models.llamacpp import ChatLlamaCpp
except ImportError as error:  # an optional dependency: only the compiled runtime needs it
    raise LocalModelUnavailableError(
        "the llama-cpp-python runtime needs langchain-community (its ChatLlamaCpp): "
        + COMPILED_HINT
    ) from error

__all__ = ["SerializedChatLlamaCpp"]


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

    _guard: ContextGuard = PrivateAttr(default_factory=ContextGuard)

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
        """Run the whole of :meth:`_stream` in one worker thread, handing chunks to the loop
        (:func:`~langchain_outprofile.gguf_chat.stream_in_one_thread` says why)."""
        sync_manager = run_manager.get_sync() if run_manager else None
        stream = functools.partial(self._stream, messages, stop, sync_manager, **kwargs)
        async for chunk in stream_in_one_thread(stream):
            yield chunk

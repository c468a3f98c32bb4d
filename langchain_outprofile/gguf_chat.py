"""GGUF chat: the embedded model run by cyllama, a prebuilt llama.cpp binding (no compiler).

The ``local`` extra installs ``cyllama``, whose wheel carries llama.cpp compiled for x86-64
with AVX2/FMA (and arm64), so a new user needs no C compiler and no build: the model loads in
well under a second. This module holds what runs on it:

- :class:`GgufEngine`: one loaded GGUF and one llama.cpp context. It renders the GGUF's own
  chat template (Jinja, as llama-cpp-python's ``Jinja2ChatFormatter`` renders it), tokenizes
  as llama-cpp-python does (special tokens parsed, BOS as the file asks), samples with
  llama-cpp-python's chain (repeat penalty, top-k 40, top-p, min-p 0.05, temperature, seeded
  draw) and streams text, holding back what may be the start of a stop string.
- :class:`ChatGguf`: a LangChain chat model over one engine (``invoke``, ``stream``,
  ``ainvoke``, ``astream``, ``batch``), whose calls take turns as
  ``local.SerializedChatLlamaCpp``'s do: one context must never be entered by two threads.
- :func:`stream_in_one_thread`: an async iterator over a blocking one, produced in a single
  worker thread, which the chat model's ``astream`` and the model server's streaming share.

cyllama 0.2.18 reads ``model.n_vocab`` in ``get_logits`` and ``get_logits_ith``, which its
``LlamaModel`` does not have; :func:`load_gguf` loads the file as a subclass that adds it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from pydantic import PrivateAttr

from langchain_outprofile.errors import LocalModelUnavailableError
from langchain_outprofile.model_file import INSTALL_HINT, prefer_passive_openmp

__all__ = [
    "ChatGguf",
    "ContextGuard",
    "GgufEngine",
    "Sampling",
    "load_gguf",
    "stream_in_one_thread",
]

T = TypeVar("T")

ROLES = {"human": "user", "ai": "assistant", "system": "system", "tool": "tool"}
"""LangChain message types as chat-template roles."""


def load_gguf(path: str, *, verbose: bool = False) -> Any:
    """A cyllama ``LlamaModel`` for ``path`` with the ``n_vocab`` its logits readers need
    (``verbose``: keep llama.cpp's own log lines; off, they are silenced process-wide).

    Raises:
        LocalModelUnavailableError: when cyllama is not installed.
    """
    prefer_passive_openmp()
    try:
        from cyllama.llama import llama_cpp as cyllama
    except ImportError:
        raise LocalModelUnavailableError(f"cyllama is not installed: {INSTALL_HINT}") from None
    if not verbose:  # llama.cpp's load report is noise in a CLI or a test log
        cyllama.disable_logging()

    class Model(cyllama.LlamaModel):  # type: ignore[misc]
        @property
        def n_vocab(self) -> int:
            return int(self.get_vocab().n_vocab)

    return Model(path, cyllama.LlamaModelParams())


@dataclass(frozen=True)
class Sampling:
    """How the next token is drawn (llama-cpp-python's defaults where this names none)."""

    temperature: float = 0.2
    top_p: float = 0.9
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.15
    seed: int = 7


class GgufEngine:
    """One GGUF model and one llama.cpp context, run by cyllama. Not thread-safe: callers take
    turns (:class:`ChatGguf` and the model server hold a lock around every call).

    Args:
        path: the GGUF file.
        n_ctx: context window in tokens.
        n_threads: CPU threads for generation and prompt processing.
        n_batch: prompt tokens decoded per llama.cpp call.

    Example:
        ```python
        from langchain_outprofile.gguf_chat import GgufEngine, Sampling
        from langchain_outprofile.model_file import local_model_path

        engine = GgufEngine(str(local_model_path()))
        prompt = engine.chat_prompt([{"role": "user", "content": "Name a colour."}])
        print("".join(engine.generate(prompt, max_tokens=8, sampling=Sampling())))
        ```
    """

    def __init__(
        self,
        path: str,
        *,
        n_ctx: int = 2048,
        n_threads: int = 2,
        n_batch: int = 256,
        verbose: bool = False,
    ) -> None:
        self.path = path
        self.model = load_gguf(path, verbose=verbose)  # says what to install without cyllama
        from cyllama.llama import llama_cpp as cyllama  # the local extra

        self.vocab = self.model.get_vocab()
        params = cyllama.LlamaContextParams()
        params.n_ctx = n_ctx
        params.n_batch = n_batch
        params.n_threads = n_threads
        params.n_threads_batch = n_threads
        self.context = cyllama.LlamaContext(self.model, params)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self._cyllama = cyllama
        metadata = self.model.metadata()
        self.template: str | None = metadata.get("tokenizer.chat_template")
        self._render: Callable[..., str] | None = None

    def __reduce__(self) -> tuple[Any, tuple[str, int, int, int]]:
        """A copy or a pickle loads the file again into a context of its own."""
        return (_reload, (self.path, self.n_ctx, self.n_threads, self.n_batch))

    def chat_prompt(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
    ) -> str:
        """The GGUF's chat template applied to ``messages``, ending where the reply starts.

        ``bos_token`` and ``eos_token`` are the spellings the template may print (default: the
        model's own; the evaluation's scorer passes ``""``, as llama-cpp-python's did, and
        lets the tokenizer add BOS). A model without a template (a base model) gets each
        message's text followed by a blank line; the reply continues it.
        """
        if self.template is None:
            return "".join(f"{message['content']}\n\n" for message in messages)
        if self._render is None:
            import jinja2.sandbox  # the local extra

            def refuse(message: str) -> None:
                raise jinja2.exceptions.TemplateError(message)

            environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
                trim_blocks=True, lstrip_blocks=True
            )
            self._render = functools.partial(
                environment.from_string(self.template).render,
                raise_exception=refuse,
                add_generation_prompt=True,
            )
        bos, eos = self.vocab.token_bos(), self.vocab.token_eos()
        if bos_token is None:
            bos_token = self.vocab.token_to_piece(bos, 0, True) if bos >= 0 else ""
        if eos_token is None:
            eos_token = self.vocab.token_to_piece(eos, 0, True) if eos >= 0 else ""
        return self._render(
            messages=[dict(message) for message in messages],
            bos_token=bos_token,
            eos_token=eos_token,
        )

    def tokenize(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of ``text``: BOS when the file asks for one, special tokens parsed when
        ``special`` (a prompt); neither for a plain text (``special=False``)."""
        return list(self.vocab.tokenize(text, add_special=special, parse_special=special))

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int | None,
        sampling: Sampling,
        stop: Sequence[str] = (),
        report: Callable[[str, int, int], None] | None = None,
    ) -> Iterator[str]:
        """Generate after ``prompt``, yielding text as it is decoded.

        Stops at an end-of-generation token, at ``max_tokens`` (None: the context's end) or
        before the first stop string. ``report(finish_reason, prompt_tokens,
        completion_tokens)`` is called once, when the generation ends (``"stop"`` or
        ``"length"``).

        Raises:
            ValueError: when the prompt does not fit the context.
        """
        tokens = self.tokenize(prompt)
        if len(tokens) >= self.n_ctx:
            raise ValueError(f"the prompt has {len(tokens)} tokens; the context holds {self.n_ctx}")
        limit = self.n_ctx - len(tokens)
        if max_tokens is not None and max_tokens > 0:
            limit = min(limit, max_tokens)
        self.context.kv_cache_clear()
        for start in range(0, len(tokens), self.n_batch):
            chunk = tokens[start : start + self.n_batch]
            self.context.decode(self._cyllama.llama_batch_get_one(chunk, start))
        sampler = self._sampler(sampling)
        generated: list[int] = []
        text, sent, finish = "", 0, "length"
        while len(generated) < limit:
            token = sampler.sample(self.context, -1)
            if self.vocab.is_eog(token):
                finish = "stop"
                break
            generated.append(token)
            # the whole reply detokenized: a character split over two tokens appears whole
            text = self.vocab.detokenize(generated, False, False)
            cut = _first_stop(text, stop)
            if cut is not None:
                text, finish = text[:cut], "stop"
                break
            ready = len(text) - _held_back(text, stop)
            if text[ready - 1 : ready] == "\ufffd":  # an incomplete UTF-8 sequence so far
                ready -= 1
            if ready > sent:
                yield text[sent:ready]
                sent = ready
            self.context.decode(
                self._cyllama.llama_batch_get_one([token], len(tokens) + len(generated) - 1)
            )
        if len(text) > sent:
            yield text[sent:]
        if report is not None:
            report(finish, len(tokens), len(generated))

    def _sampler(self, sampling: Sampling) -> Any:
        """llama-cpp-python's chain: penalties, then greedy at temperature 0, else top-k,
        top-p, min-p, temperature and a seeded draw."""
        sampler = self._cyllama.LlamaSampler(self._cyllama.LlamaSamplerChainParams())
        sampler.add_penalties(64, sampling.repeat_penalty, 0.0, 0.0)
        if sampling.temperature <= 0:
            sampler.add_greedy()
            return sampler
        sampler.add_top_k(sampling.top_k)
        sampler.add_top_p(sampling.top_p, 1)
        sampler.add_min_p(sampling.min_p, 1)
        sampler.add_temp(sampling.temperature)
        sampler.add_dist(sampling.seed)
        return sampler


def _reload(path: str, n_ctx: int, n_threads: int, n_batch: int) -> GgufEngine:
    return GgufEngine(path, n_ctx=n_ctx, n_threads=n_threads, n_batch=n_batch)


def _first_stop(text: str, stop: Sequence[str]) -> int | None:
    """Where the first stop string in ``text`` starts, or None."""
    found = [index for word in stop if word and (index := text.find(word)) >= 0]
    return min(found) if found else None


def _held_back(text: str, stop: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a stop string."""
    longest = 0
    for word in stop:
        for size in range(min(len(word) - 1, len(text)), longest, -1):
            if word.startswith(text[-size:]):
                longest = size
                break
    return longest


class ContextGuard:
    """The lock of one llama.cpp context, and which thread is running inside it.

    :meth:`hold` lets one call in at a time. A call made by the thread already running inside
    passes straight through (it cannot run at the same time as itself): a chat model's
    ``_generate`` runs its ``_stream`` when ``streaming=True``, and a callback may call the
    model again. :meth:`pause` marks a stream waiting at a ``yield``: it keeps the lock, but no
    thread runs inside, and the next chunk may be asked for from another thread.

    A copy or a pickle gets a new guard: it also gets a new context (the model is loaded
    again), and a lock cannot be pickled.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: int | None = None  # id of the thread running inside the context

    def __reduce__(self) -> tuple[type[ContextGuard], tuple[()]]:
        return (ContextGuard, ())

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


async def stream_in_one_thread(produce: Callable[[], Iterator[T]]) -> AsyncIterator[T]:
    """The items of ``produce()``, made in one worker thread and handed to the event loop.

    Running each ``next()`` as a new executor job (LangChain's default ``astream``) would let
    a stream waiting for a model's lock block a worker that the stream holding the lock needs
    for its next item, and more concurrent streams than the executor has workers would
    deadlock. One job per stream never needs a second worker. Leaving the loop early closes
    the iterator in its thread (so it frees what it holds); its errors reach the consumer.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    abandoned = threading.Event()

    def hand_over(kind: str, item: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is waiting
            loop.call_soon_threadsafe(queue.put_nowait, (kind, item))

    def run() -> None:
        try:
            if abandoned.is_set():
                return
            with contextlib.closing(_as_generator(produce())) as items:
                for item in items:
                    if abandoned.is_set():  # the consumer stopped: free what the stream holds
                        break
                    hand_over("item", item)
        except Exception as error:  # raised again in the consumer's task
            hand_over("error", error)
        finally:
            hand_over("end", None)

    # the context is copied as LangChain's run_in_executor does (tracing, child configs)
    loop.run_in_executor(None, functools.partial(contextvars.copy_context().run, run))
    try:
        while True:
            kind, item = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise item
            yield item
    finally:
        abandoned.set()


def _as_generator(items: Iterator[T]) -> Generator[T, None, None]:
    yield from items


class ChatGguf(BaseChatModel):
    """The embedded GGUF as a LangChain chat model, run by cyllama (no compiler needed).

    One instance owns one llama.cpp context, loaded on first use; its calls take turns
    (``batch``, ``abatch``, ``asyncio.gather`` over ``ainvoke`` and concurrent ``astream``
    calls may share it). A stream keeps the model from its first chunk until it is exhausted
    or closed, so a loop over an unfinished ``stream()`` must not call the same model in its
    body. ``model_copy()`` shares the context and its lock; ``deepcopy`` and pickling load a
    new one.

    Args:
        model_path: the GGUF file.
        n_ctx: context window; n_threads: CPU threads; n_batch: prompt tokens per decode.
        temperature, top_p, top_k, min_p, repeat_penalty, seed: sampling (per call, the seed
            makes an answer reproducible).
        max_tokens: the longest answer in tokens (None: up to the context's end).
        stop: strings that end an answer (not included).
        streaming: ``invoke`` generates through ``stream`` (callbacks see every token).
        verbose: keep llama.cpp's own log lines (default: silenced).

    Example:
        ```python
        from langchain_outprofile.gguf_chat import ChatGguf
        from langchain_outprofile.model_file import local_model_path

        model = ChatGguf(model_path=str(local_model_path()), max_tokens=16)
        print(model.invoke("Name a colour.").text)
        ```
    """

    model_path: str
    n_ctx: int = 2048
    n_threads: int = 2
    n_batch: int = 256
    # the sampling defaults are Sampling's, named once there
    temperature: float = Sampling.temperature
    top_p: float = Sampling.top_p
    top_k: int = Sampling.top_k
    min_p: float = Sampling.min_p
    repeat_penalty: float = Sampling.repeat_penalty
    seed: int = Sampling.seed
    max_tokens: int | None = 96
    stop: list[str] | None = None
    streaming: bool = False
    verbose: bool = False  # llama.cpp's own log lines

    _guard: ContextGuard = PrivateAttr(default_factory=ContextGuard)
    _engine: GgufEngine | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "cyllama"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_path": self.model_path, **self._sampling_params()}

    def _sampling_params(self) -> dict[str, Any]:
        names = ("temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed", "max_tokens")
        return {name: getattr(self, name) for name in names}

    @property
    def engine(self) -> GgufEngine:
        """The loaded model and context (loaded on first use; hold the guard to use it)."""
        with self._guard.hold():
            if self._engine is None:
                self._engine = GgufEngine(
                    self.model_path,
                    n_ctx=self.n_ctx,
                    n_threads=self.n_threads,
                    n_batch=self.n_batch,
                    verbose=self.verbose,
                )
            return self._engine

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        with self._guard.hold():
            if self.streaming:
                chunks = list(self._stream(messages, stop, run_manager, **kwargs))
                text = "".join(chunk.text for chunk in chunks)
                metadata = chunks[-1].message.response_metadata if chunks else {}
                last = chunks[-1].message if chunks else None
                usage = last.usage_metadata if isinstance(last, AIMessageChunk) else None
            else:
                ended: dict[str, Any] = {}
                text = "".join(self._pieces(messages, stop, ended, **kwargs))
                metadata, usage = _finished(ended, self.model_path)
        message = AIMessage(content=text, response_metadata=metadata, usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        ended: dict[str, Any] = {}
        with (
            self._guard.hold(),
            contextlib.closing(
                _as_generator(self._pieces(messages, stop, ended, **kwargs))
            ) as pieces,
        ):
            for piece in pieces:
                chunk = ChatGenerationChunk(message=AIMessageChunk(content=piece))
                if run_manager is not None:
                    run_manager.on_llm_new_token(piece, chunk=chunk)
                with self._guard.pause():
                    yield chunk
        metadata, usage = _finished(ended, self.model_path)
        yield ChatGenerationChunk(
            message=AIMessageChunk(content="", response_metadata=metadata, usage_metadata=usage)
        )

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        sync_manager = run_manager.get_sync() if run_manager else None
        stream = functools.partial(self._stream, messages, stop, sync_manager, **kwargs)
        async for chunk in stream_in_one_thread(stream):
            yield chunk

    def _pieces(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None,
        ended: dict[str, Any],
        **kwargs: Any,
    ) -> Iterator[str]:
        """The answer's text pieces; ``ended`` gets the finish reason and the token counts."""
        options = {**self._sampling_params(), **kwargs}
        unknown = set(options) - set(self._sampling_params())
        if unknown:
            raise TypeError(f"ChatGguf does not take {', '.join(sorted(unknown))}")
        max_tokens = options.pop("max_tokens")
        if max_tokens is not None and not isinstance(max_tokens, int):
            raise TypeError(f"max_tokens must be an int or None, not {type(max_tokens).__name__}")
        engine = self.engine
        chat = [{"role": ROLES.get(m.type, m.type), "content": m.text} for m in messages]
        prompt = engine.chat_prompt(chat)

        def report(finish: str, prompt_tokens: int, completion_tokens: int) -> None:
            ended.update(finish=finish, prompt=prompt_tokens, completion=completion_tokens)

        yield from engine.generate(
            prompt,
            max_tokens=max_tokens,
            sampling=Sampling(**options),
            stop=[*(self.stop or ()), *(stop or ())],
            report=report,
        )


def _finished(ended: Mapping[str, Any], path: str) -> tuple[dict[str, Any], Any]:
    """The response metadata and usage of a finished generation (empty before it ended)."""
    if not ended:
        return {}, None
    usage = {
        "input_tokens": ended["prompt"],
        "output_tokens": ended["completion"],
        "total_tokens": ended["prompt"] + ended["completion"],
    }
    return {"finish_reason": ended["finish"], "model_name": Path(path).name}, usage

